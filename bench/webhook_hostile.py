"""Hostile clients against the real `virtdev webhook`: memory, files and time stay bounded.

Each scenario runs a fresh process (defaults as deployed: --max-body-bytes 6 MiB, 10 s head and
body deadlines, 64 MiB body budget) over loopback TLS, and compares with a baseline taken in the
same run on an idle process: its RSS and the latency of a normal review over a fresh connection.

- dribble: 100 clients each declare a body of --max-body-bytes − 1 and send all of it but the
  last byte, then stall. Targets: peak RSS (VmHWM) < 512 MiB (the Deployment's limit), normal
  reviews sent meanwhile answered in < 1 s, the stalled ones closed by the body deadline.
- huge: one 5.7 MiB review of 1.2 million unpermitted capabilities to /validate, normal reviews
  sent meanwhile. Targets: denied (403 in a 200 answer) in < 1 s with a message < 4 KiB, peak
  RSS < 512 MiB, the normal reviews answered within 1 s. The rules' own cost is measured too
  (in this process, without HTTP), since that is what the decision's time is made of.
- slow: 50 half-sent heads and 50 half-sent bodies. Target: each answered 408 and closed within
  the deadline + 1 s.
- files: the process under `ulimit -n 256`; 300 clients connect and never start TLS, and the
  serving certificate is replaced meanwhile. Targets: the excess reset, the reload served, all
  slow clients closed by the deadline, then a normal review answered; no "Too many open files".

Exit 0 when every target is met, 1 when one is missed, 2 when the bench could not run. One
summary line on stdout; about a minute and a half; loopback only.

    .venv/bin/python bench/webhook_hostile.py
    .venv/bin/python bench/webhook_hostile.py --only huge --json hostile.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import ssl
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout

import orjson

from bench.harness import (
    PATCHED,
    BenchError,
    Server,
    all_checks_met,
    ca_of,
    finish,
    in_workdir,
    machine,
    make_material,
    missed_in,
    missed_note,
    new_leaf,
    rss_kib,
    sample,
    served_serial,
    verdict,
    wait_for,
    webhook,
)
from certs import pki
from certs.store import Material
from tests.support import status_kib

MiB = 1024 * 1024
MAX_BODY_BYTES = 6 * MiB  # the default of --max-body-bytes
RSS_LIMIT_KIB = 512 * 1024  # the Deployment's memory limit
DEADLINE = 10.0  # the default --head-timeout and --body-timeout
NORMAL = PATCHED.read_bytes()
FILE_LIMIT = 256


# --- clients ------------------------------------------------------------------------------


def head(path: str, length: int, *, close: bool = False) -> bytes:
    """A request head; `close` asks the server to close after answering (the reader's EOF)."""
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(
    port: int, context: ssl.SSLContext, data: bytes, *, timeout: float = 30
) -> tuple[int, bytes, float]:
    """Send `data` on a fresh TLS connection, read until closed: (status, body, seconds)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        writer.write(data)
        response = await asyncio.wait_for(reader.read(), timeout=timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    elapsed = time.perf_counter() - started
    status_line, _, rest = response.partition(b"\r\n")
    status = int(status_line.split()[1]) if status_line else 0
    return status, rest.partition(b"\r\n\r\n")[2], elapsed


async def normal_reviews(
    port: int, context: ssl.SSLContext, stop: asyncio.Event, every: float = 0.1
) -> list[float]:
    """Normal reviews, one at a time over fresh connections, until `stop`: their seconds."""
    seconds: list[float] = []
    close = head("/mutate", len(NORMAL), close=True)
    while not stop.is_set():
        status, body, elapsed = await exchange(port, context, close + NORMAL)
        if status != 200 or b"JSONPatch" not in body:
            raise BenchError(f"a normal review failed: {status} {body[:200]!r}")
        seconds.append(elapsed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
    return seconds


def latency(seconds: list[float]) -> dict[str, float]:
    return {
        "count": len(seconds),
        "p50_ms": statistics.median(seconds) * 1000,
        "max_ms": max(seconds) * 1000,
    }


def baseline(server: Server, context: ssl.SSLContext) -> dict[str, Any]:
    async def run() -> list[float]:
        stop = asyncio.Event()
        task = asyncio.create_task(normal_reviews(server.port, context, stop, every=0.02))
        await asyncio.sleep(2)  # the baseline's duration
        stop.set()
        return await task

    seconds = asyncio.run(run())
    return {"rss_kib": rss_kib(server.pid), **latency(seconds)}


# --- scenarios ----------------------------------------------------------------------------


def dribble(args: argparse.Namespace, workdir: Path, material: Material) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    with webhook(workdir, material) as server:
        base = baseline(server, context)

        async def client() -> tuple[int, float]:
            started = time.perf_counter()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context, server_hostname="localhost"
            )
            writer.write(head("/validate", MAX_BODY_BYTES - 1))
            chunk = b" " * (64 * 1024)
            sent = 0
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while sent < MAX_BODY_BYTES - 2 and not reader.at_eof():
                    part = chunk[: MAX_BODY_BYTES - 2 - sent]
                    writer.write(part)
                    await writer.drain()
                    sent += len(part)
            response = await asyncio.wait_for(reader.read(), timeout=60)
            writer.close()
            status = int(response.split(b" ", 2)[1]) if response else 0
            return status, time.perf_counter() - started

        async def run() -> tuple[list[tuple[int, float]], list[float], int]:
            stop = asyncio.Event()
            clients = [asyncio.create_task(client()) for _ in range(args.clients)]
            await asyncio.sleep(1)  # the dribblers connect and send first
            normal = asyncio.create_task(normal_reviews(server.port, context, stop))
            peak = 0
            while not all(task.done() for task in clients):
                peak = max(peak, rss_kib(server.pid))
                await asyncio.sleep(0.2)  # RSS sampling interval
            stop.set()
            return [task.result() for task in clients], await normal, peak

        results, seconds, _ = asyncio.run(run())
        hwm = status_kib(server.pid, "VmHWM")
    statuses = [status for status, _ in results]
    held = [elapsed for status, elapsed in results if status == 408]
    out = {
        "baseline": base,
        "clients": args.clients,
        "refused_503": statuses.count(503),
        "closed_408": len(held),
        "other": len(statuses) - statuses.count(503) - len(held),
        "slowest_close_s": max(held) if held else None,
        "peak_rss_kib": hwm,
        "normal": latency(seconds),
    }
    out["latency_ratio"] = out["normal"]["max_ms"] / base["max_ms"]
    out["checks"] = {
        "peak RSS < 512 MiB": hwm < RSS_LIMIT_KIB,
        "normal reviews < 1 s": out["normal"]["max_ms"] < 1000,
        "every dribbler answered 503 or 408": out["other"] == 0,
    }
    return out


def huge_review(capabilities: int) -> bytes:
    document = orjson.loads(NORMAL)
    compute = document["request"]["object"]["spec"]["containers"][0]
    compute["securityContext"] = {"capabilities": {"add": ["AB"] * capabilities}}
    return orjson.dumps(document)


def rules_cost(body: bytes) -> dict[str, float]:
    """Parse and decide without HTTP, in this process: what the decision itself costs."""
    from webhook.admission import validate_review
    from webhook.rules.policy import LauncherPolicy
    from webhook.serving import review

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    parsed = review.parse(body)
    parsed_at = time.perf_counter()
    answer = validate_review(parsed, LauncherPolicy())
    decided_at = time.perf_counter()
    rendered = orjson.dumps(review.render(parsed, answer))
    return {
        "parse_s": parsed_at - started,
        "decide_s": decided_at - parsed_at,
        "render_s": time.perf_counter() - decided_at,
        "unrendered_message_bytes": len(answer.message.encode()),
        "answer_bytes": len(rendered),
        # This process's peak RSS grown by the decision (KiB; 0 if an earlier peak was higher).
        "peak_rss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before,
    }


async def worker_free(port: int, context: ssl.SSLContext, timeout: float = 120) -> float:
    """Seconds until the worker thread is done with the huge review (a decision over its
    deadline goes on): a review over 64 KiB, which waits for the same thread, is answered 200."""
    document = orjson.loads(NORMAL)
    document["request"]["object"]["metadata"]["annotations"] = {"pad": "x" * 100_000}
    body = orjson.dumps(document)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status, _, _ = await exchange(port, context, head("/mutate", len(body), close=True) + body)
        if status == 200:
            return time.monotonic() - started
    raise BenchError(f"the worker thread was still busy after {timeout} s")


def huge(args: argparse.Namespace, workdir: Path, material: Material) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    body = huge_review(args.capabilities)
    with webhook(workdir, material) as server:
        base = baseline(server, context)

        async def run() -> tuple[tuple[int, bytes, float], list[float]]:
            stop = asyncio.Event()
            normal = asyncio.create_task(normal_reviews(server.port, context, stop, every=0.05))
            await asyncio.sleep(0.5)  # normal reviews are flowing first
            request = head("/validate", len(body), close=True) + body
            denial = await exchange(server.port, context, request)
            await asyncio.sleep(0.5)  # and keep flowing after
            stop.set()
            return denial, await normal

        (status, answer, seconds), normal = asyncio.run(run())
        worker_free_s = asyncio.run(worker_free(server.port, context))
        hwm = status_kib(server.pid, "VmHWM")  # the whole decision's peak, late or not
    out: dict[str, Any] = {
        "baseline": base,
        "body_bytes": len(body),
        "capabilities": args.capabilities,
        "status": status,
        "seconds": seconds,
        "answer_bytes": len(answer),
        "peak_rss_kib": hwm,
        "worker_free_after_s": worker_free_s,
        "normal": latency(normal),
        "rules": rules_cost(body),
    }
    denied, message = False, ""
    if status == 200:
        response = orjson.loads(answer)["response"]
        denied = response["allowed"] is False
        message = response.get("status", {}).get("message", "")
    elif answer:
        message = orjson.loads(answer).get("message", "")
    out["message_bytes"] = len(message.encode())
    out["message_start"] = message[:120]
    out["latency_ratio"] = out["normal"]["max_ms"] / base["max_ms"]
    out["checks"] = {
        "denied": denied,
        "denied in < 1 s": denied and seconds < 1,
        "message < 4 KiB": 0 < out["message_bytes"] < 4096,
        "peak RSS < 512 MiB": hwm < RSS_LIMIT_KIB,
        "normal reviews < 1 s": out["normal"]["max_ms"] < 1000,
    }
    return out


def slow(args: argparse.Namespace, workdir: Path, material: Material) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    with webhook(workdir, material) as server:
        heads = [b"POST /validate HTTP/1.1\r\nHost: localhost\r\n"] * args.slow
        bodies = [head("/validate", len(NORMAL)) + NORMAL[:100]] * args.slow

        async def run() -> list[tuple[int, bytes, float]]:
            return await asyncio.gather(
                *(exchange(server.port, context, data, timeout=60) for data in heads + bodies)
            )

        results = asyncio.run(run())
    head_s = [elapsed for _, _, elapsed in results[: args.slow]]
    body_s = [elapsed for _, _, elapsed in results[args.slow :]]
    statuses = {status for status, _, _ in results}
    out = {
        "heads": args.slow,
        "bodies": args.slow,
        "statuses": sorted(statuses),
        "head_closed_s": [min(head_s), max(head_s)],
        "body_closed_s": [min(body_s), max(body_s)],
    }
    out["checks"] = {
        "all answered 408": statuses == {408},
        "closed by the deadline + 1 s": max(head_s + body_s) < DEADLINE + 1,
    }
    return out


def renew(material: Material) -> int:
    """A new serving pair from the same CA, key first, each file replaced atomically."""
    leaf = new_leaf(ca_of(material))
    for path, data in (
        (material.tls_key, pki.key_pem(leaf.key)),
        (material.tls_cert, pki.cert_pem(leaf.cert)),
    ):
        temporary = path.with_suffix(".new")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return int(leaf.cert.serial_number)


#: Loopback addresses the files scenario's clients come from: each may hold half the slots.
PEERS = 4


def files(args: argparse.Namespace, workdir: Path, material: Material) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    prefix = ["sh", "-c", f'ulimit -n {FILE_LIMIT} && exec "$@"', "sh"]
    with webhook(workdir, material, prefix=prefix) as server:

        def metric(name: str) -> float:
            return sample(server.metrics(), name)

        limit = metric("virtdev_webhook_connections_limit")
        before = served_serial(server.port, context)
        held = []
        started = time.monotonic()
        # From several loopback addresses: one address may hold only half of the slots
        # (`peer_limit`), and this is about the process's limit, not one peer's share.
        for index in range(args.files_clients):
            source = (f"127.0.0.{2 + index % PEERS}", 0)
            with contextlib.suppress(ConnectionResetError):
                held.append(
                    socket.create_connection(
                        ("127.0.0.1", server.port), timeout=10, source_address=source
                    )
                )
        shed = 'virtdev_webhook_connections_shed_total{reason="limit"}'
        peer_shed = 'virtdev_webhook_connections_shed_total{reason="peer_limit"}'
        wait_for(lambda: metric(shed) + metric(peer_shed) + metric("virtdev_webhook_connections")
                 >= args.files_clients, "every client accepted or reset", timeout=30)  # fmt: skip
        at_limit = metric("virtdev_webhook_connections")
        renewed = renew(material)
        reloads = 'virtdev_webhook_certificate_reloads_total{result="ok"}'
        reload_s = wait_for(lambda: metric(reloads) >= 1, "the reload", timeout=30)
        during_reload = metric("virtdev_webhook_connections")
        wait_for(lambda: metric("virtdev_webhook_connections") == 0, "all shed", timeout=30)
        cleared_after = time.monotonic() - started
        for sock in held:
            sock.close()
        after = served_serial(server.port, context)

        async def one() -> tuple[int, bytes, float]:
            data = head("/mutate", len(NORMAL), close=True)
            return await exchange(server.port, context, data + NORMAL)

        status, _, normal_s = asyncio.run(one())
        emfile = "Too many open files" in server.log.read_text(errors="replace")
        out = {
            "file_limit": FILE_LIMIT,
            "connection_limit": limit,
            "clients": args.files_clients,
            "reset_over_limit": metric(shed) + metric(peer_shed),
            "open_at_limit": at_limit,
            "open_when_reload_seen": during_reload,
            "reload_seen_after_s": reload_s,
            "all_closed_after_s": cleared_after,
            "normal_after": {"status": status, "ms": normal_s * 1000},
            "emfile_logged": emfile,
        }
    out["checks"] = {
        "excess reset": out["reset_over_limit"] >= args.files_clients - limit,
        "reload served at the limit": after == renewed != before and during_reload == limit,
        "all closed by the deadline + 2 s": cleared_after < DEADLINE + 2,
        "normal review after": status == 200,
        "no EMFILE": not emfile,
    }
    return out


SCENARIOS = {"dribble": dribble, "huge": huge, "slow": slow, "files": files}


def summary(ok: bool, results: dict[str, Any]) -> str:
    parts = []
    if "dribble" in results:
        d = results["dribble"]
        parts.append(
            f"dribble: {d['refused_503']}x503 {d['closed_408']}x408 "
            f"peak={d['peak_rss_kib'] / 1024:.0f}MiB (idle {d['baseline']['rss_kib'] / 1024:.0f}) "
            f"normal max={d['normal']['max_ms']:.0f}ms ({d['latency_ratio']:.1f}x idle)"
        )
    if "huge" in results:
        h = results["huge"]
        parts.append(
            f"huge: {h['status']} in {h['seconds']:.2f}s msg={h['message_bytes']}B "
            f"peak={h['peak_rss_kib'] / 1024:.0f}MiB normal max={h['normal']['max_ms']:.0f}ms "
            f"rules: parse {h['rules']['parse_s']:.2f}s decide {h['rules']['decide_s']:.2f}s "
            f"+{h['rules']['peak_rss_growth_kib'] / 1024:.0f}MiB"
        )
    if "slow" in results:
        s = results["slow"]
        parts.append(
            f"slow: {s['statuses']} closed {s['head_closed_s'][1]:.1f}/{s['body_closed_s'][1]:.1f}s"
        )
    if "files" in results:
        f = results["files"]
        parts.append(
            f"files: limit {f['connection_limit']:.0f} reset {f['reset_over_limit']:.0f} "
            f"reload {f['reload_seen_after_s']:.1f}s closed {f['all_closed_after_s']:.1f}s "
            f"after {f['normal_after']['status']}"
        )
    return (
        f"{verdict('webhook_hostile', ok)} " + " | ".join(parts) + missed_note(missed_in(results))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--clients", type=int, default=100, help="dribbling clients")
    parser.add_argument("--capabilities", type=int, default=1_200_000)
    parser.add_argument("--slow", type=int, default=50, help="slow heads, and as many bodies")
    parser.add_argument("--files-clients", type=int, default=300)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}

    def scenarios(workdir: Path) -> dict[str, Any]:
        for name in args.only or list(SCENARIOS):
            material = make_material(workdir / name / "certs")
            results[name] = SCENARIOS[name](args, workdir / name, material)
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
        return results

    if in_workdir("webhook_hostile", scenarios, needs_wrk=False) is None:
        return 2
    ok = all_checks_met(results)
    return finish(ok, results, args.json, summary(ok, results))


if __name__ == "__main__":
    sys.exit(main())
