"""Faults under load on the real `virtdev webhook`: rotation, SIGTERM, the node view cut off.

Three scenarios, each with `wrk` loading the webhook (pinned to its own core) over loopback:

- rotation: the serving pair lives in a Secret-like volume (`..data` symlink swapped atomically,
  as the kubelet does). While one wrk keeps 32 connections alive and another opens a fresh TLS
  connection for every request (`Connection: close`), the pair is replaced several times —
  renewed by the same CA, then issued by a second CA the client already trusts — and once by a
  bad pair (a certificate with another key), which must be refused. Target: zero failed
  requests, each new pair served (checked by a verified handshake), the bad one never.
- sigterm: 32 requests are put in flight (headers and half the body sent, `100 Continue`
  received: the app is reading them) while wrk loads the server; then SIGTERM. Target: the
  listener closes, every in-flight request gets its full 200 answer with a patch, no request
  is answered with a non-2xx status, and the process exits 0 within its 5 s grace period.
- nodes: the webhook watches nodes through `--kubeconfig` on the Kubernetes API stand-in of
  the tests (tests/kube_standin.py). During the load the stand-in's watches are cut twice, then
  the stand-in is stopped altogether. Target: zero failed admissions, launcher pods still
  patched, and the metrics show decisions both with the view in sync and without it.

Exit 0 when every target is met, 1 when one is missed, 2 when the bench could not run. One
summary line on stdout (wrk's text on stderr). About a minute and a half; loopback only.

    .venv/bin/python bench/webhook_faults.py
    .venv/bin/python bench/webhook_faults.py --only rotation --json faults.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout

from bench.harness import (
    PATCHED,
    BenchError,
    all_checks_met,
    api_server,
    ca_of,
    cores,
    finish,
    in_workdir,
    machine,
    make_material,
    missed_in,
    missed_note,
    new_leaf,
    sample,
    served_serial,
    verdict,
    wait_for,
    wait_synced,
    webhook,
    wrk_background,
)
from certs import pki
from tests.certs.helpers import SecretVolume
from tests.kube_standin import node_object
from tests.support import refuses_connections

IN_FLIGHT = 32
GRACE_SECONDS = 5  # webhook/serving/server.py GRACEFUL_SHUTDOWN_SECONDS
OK_RELOADS = 'virtdev_webhook_certificate_reloads_total{result="ok"}'
FAILED_RELOADS = 'virtdev_webhook_certificate_reloads_total{result="failed"}'


def pair(leaf: pki.KeyPair, key: Any = None) -> dict[str, bytes]:
    return {"tls.crt": pki.cert_pem(leaf.cert), "tls.key": pki.key_pem(key or leaf.key)}


# --- rotation -----------------------------------------------------------------------------


def rotation(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server_cpu, load_cpu = cores()
    first, second = make_material(workdir / "ca-1"), make_material(workdir / "ca-2")
    bundle = workdir / "bundle.crt"  # the caBundle during a CA rotation: old and new
    bundle.write_bytes(first.ca_cert.read_bytes() + second.ca_cert.read_bytes())
    context = ssl.create_default_context(cafile=str(bundle))
    volume = SecretVolume(
        workdir / "tls",
        {"tls.crt": first.tls_cert.read_bytes(), "tls.key": first.tls_key.read_bytes()},
    )
    cas = [ca_of(first), ca_of(second)]
    steps = [cas[0]] * (args.rotations // 2) + [cas[1]] * (args.rotations - args.rotations // 2)
    seconds = args.rotations * args.interval + 8
    served: list[int] = []
    swap_seconds: list[float] = []
    tls = (volume.path("tls.crt"), volume.path("tls.key"))
    with webhook(workdir, tls, cpu=server_cpu) as hook:
        served.append(served_serial(hook.port, context))
        url = f"{hook.url}/mutate"

        def serves(serial: int) -> Callable[[], bool]:
            return lambda: served_serial(hook.port, context) == serial

        with (
            wrk_background(
                url, connections=32, seconds=seconds, cpu=load_cpu, what="rotation keep-alive"
            ) as kept,
            wrk_background(
                url, connections=16, seconds=seconds, cpu=load_cpu, close=True,
                what="rotation fresh connections",
            ) as fresh,
        ):  # fmt: skip
            bad_refused = False
            time.sleep(2)
            for index, ca in enumerate(steps):
                leaf = new_leaf(ca)
                volume.publish(pair(leaf))
                serial = leaf.cert.serial_number
                swap_seconds.append(wait_for(serves(serial), "a pair"))
                served.append(serial)
                if index == len(steps) // 2:  # a bad pair in the middle: refused, old one kept
                    stray = new_leaf(ca)
                    volume.publish(pair(stray, key=leaf.key))
                    wait_for(lambda: sample(hook.metrics(), FAILED_RELOADS) >= 1, "a refusal")
                    bad_refused = served_serial(hook.port, context) == serial
                    time.sleep(args.interval / 2)
                    volume.publish(pair(leaf))  # back to a good pair (content-compared: no reload)
                time.sleep(args.interval)
            kept_load = kept.result(timeout=seconds + 60)
            fresh_load = fresh.result(timeout=seconds + 60)
        metrics = hook.metrics()
    ok_reloads, failed_reloads = sample(metrics, OK_RELOADS), sample(metrics, FAILED_RELOADS)
    checks = {
        "no failed request": kept_load.failed + fresh_load.failed == 0,
        "every new pair served in order": len(set(served)) == len(steps) + 1,
        "bad pair refused, old pair kept": bad_refused and failed_reloads == 1,
        "one reload per good pair": ok_reloads == len(steps),
    }
    return {
        "keep_alive": kept_load.brief(),
        "fresh_connections": fresh_load.brief(),
        "rotations": len(steps),
        "served_serials": len(served),
        "seconds_to_serve_new_pair_max": round(max(swap_seconds), 2),
        "reloads_ok": ok_reloads,
        "reloads_failed": failed_reloads,
        "checks": checks,
    }


# --- SIGTERM ------------------------------------------------------------------------------


def read_response(sock: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with Content-Length: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data[:100]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length: *(\d+)", head)
    if match is None:
        raise ConnectionError(f"no Content-Length in {head!r}")
    while len(body) < int(match[1]):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return head, body


def start_in_flight(port: int, context: ssl.SSLContext, body: bytes) -> ssl.SSLSocket:
    """A request the app is reading: headers and half the body sent, `100 Continue` seen."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    interim = b""
    while b"\r\n\r\n" not in interim:
        chunk = sock.recv(1)
        if not chunk:
            raise BenchError("closed before 100 Continue")
        interim += chunk
    if not interim.startswith(b"HTTP/1.1 100 Continue"):
        raise BenchError(f"expected 100 Continue, got {interim!r}")
    sock.sendall(body[: len(body) // 2])
    return sock


def sigterm(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server_cpu, load_cpu = cores()
    material = make_material(workdir / "certs")
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    body = PATCHED.read_bytes()
    uid = json.loads(body)["request"]["uid"]
    sockets: list[ssl.SSLSocket] = []
    with (
        webhook(workdir, material, cpu=server_cpu) as hook,
        wrk_background(
            f"{hook.url}/mutate", connections=64, seconds=8, cpu=load_cpu, what="sigterm"
        ) as load,
    ):
        try:
            time.sleep(2)
            sockets = [start_in_flight(hook.port, context, body) for _ in range(IN_FLIGHT)]
            signalled = time.monotonic()
            hook.process.send_signal(signal.SIGTERM)
            listener_closed = wait_for(lambda: refuses_connections(hook.port), "the listener")
            alive_after_close = hook.process.poll() is None
            answered = 0
            for sock in sockets:
                sock.sendall(body[len(body) // 2 :])
                with contextlib.suppress(OSError, ConnectionError):
                    head, answer = read_response(sock)
                    reply = json.loads(answer)["response"]
                    if (
                        head.startswith(b"HTTP/1.1 200 ")
                        and reply["uid"] == uid
                        and reply.get("patchType") == "JSONPatch"
                    ):
                        answered += 1
            returncode = hook.process.wait(timeout=GRACE_SECONDS + 30)
            exit_seconds = time.monotonic() - signalled
            wrk_load = load.result(timeout=60)
        finally:
            for sock in sockets:
                sock.close()
    checks = {
        f"{IN_FLIGHT} in-flight requests answered 200 with a patch": answered == IN_FLIGHT,
        "the listener closed with requests in flight": alive_after_close,
        "no non-2xx answer": wrk_load.status == 0,
        "exit code 0": returncode == 0,
        f"exit within {GRACE_SECONDS}s grace + 2s": exit_seconds <= GRACE_SECONDS + 2,
    }
    return {
        "in_flight": IN_FLIGHT,
        "in_flight_answered": answered,
        "load": wrk_load.brief(),
        "listener_closed_after_s": round(listener_closed, 3),
        "exit_after_s": round(exit_seconds, 3),
        "exit_code": returncode,
        "checks": checks,
    }


# --- the node view cut off ----------------------------------------------------------------


def nodes(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server_cpu, load_cpu = cores()
    material = make_material(workdir / "certs")
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    seconds = 24
    three = [node_object(f"node-{index}") for index in range(3)]
    with contextlib.ExitStack() as cluster:
        api = cluster.enter_context(
            api_server(workdir, [*three, node_object("node-no-kvm", kvm=None)])
        )
        with webhook(workdir, material, cpu=server_cpu, flags=api.flags) as hook:
            wait_synced(hook)
            patched = unpatched = dropped = 0
            with wrk_background(
                f"{hook.url}/mutate", connections=64, seconds=seconds, cpu=load_cpu,
                what="node view cut off",
            ) as load:  # fmt: skip
                started = time.monotonic()
                events = [(4.0, "drop"), (8.0, "drop"), (12.0, "stop")]
                while time.monotonic() - started < seconds - 2:
                    elapsed = time.monotonic() - started
                    while events and elapsed >= events[0][0]:
                        _, action = events.pop(0)
                        if action == "drop":
                            dropped += api.stand_in.drop_watches()
                        else:
                            cluster.close()  # the API server is gone
                    try:
                        served_serial(hook.port, context)  # 200 with a patch, or raises
                        patched += 1
                    except (BenchError, OSError):
                        unpatched += 1
                    time.sleep(0.2)
                wrk_load = load.result(timeout=seconds + 60)
            metrics = hook.metrics()
    decisions = {
        outcome: sample(
            metrics, f'virtdev_webhook_scheduling_decisions_total{{outcome="{outcome}"}}'
        )
        for outcome in ("feasible", "unsynced", "warned")
    }
    checks = {
        "no failed admission": wrk_load.failed == 0 and unpatched == 0,
        "watches were cut": dropped >= 1,
        "decided in sync and out of sync": decisions["feasible"] > 0 and decisions["unsynced"] > 0,
        "view out of sync at the end": sample(metrics, "virtdev_webhook_node_view_synced") == 0,
    }
    return {
        "load": wrk_load.brief(),
        "checked_reviews_patched": patched,
        "checked_reviews_failed": unpatched,
        "watches_dropped": dropped,
        "decisions": decisions,
        "checks": checks,
    }


# --- main ---------------------------------------------------------------------------------

SCENARIOS = {"rotation": rotation, "sigterm": sigterm, "nodes": nodes}


def summary(ok: bool, results: dict[str, Any]) -> str:
    parts = [verdict("webhook_faults", ok)]
    if "rotation" in results:
        r = results["rotation"]
        total = r["keep_alive"]["requests"] + r["fresh_connections"]["requests"]
        failed = r["keep_alive"]["failed"] + r["fresh_connections"]["failed"]
        parts.append(
            f"rotation: {r['rotations']} swaps + 1 bad pair, {total} requests "
            f"({r['fresh_connections']['requests']} on fresh connections), {failed} failed, "
            f"new pair served within {r['seconds_to_serve_new_pair_max']}s"
        )
    if "sigterm" in results:
        s = results["sigterm"]
        parts.append(
            f"sigterm: {s['in_flight_answered']}/{s['in_flight']} in flight answered, "
            f"{s['load']['requests']} under load, non-2xx {s['load']['status']}, "
            f"exit {s['exit_code']} after {s['exit_after_s']}s"
        )
    if "nodes" in results:
        n = results["nodes"]
        parts.append(
            f"nodes: {n['load']['requests']} reviews, {n['load']['failed']} failed, "
            f"{n['watches_dropped']} watches cut then API gone, "
            f"decisions feasible={n['decisions']['feasible']:.0f} "
            f"unsynced={n['decisions']['unsynced']:.0f}"
        )
    line = "; ".join(parts) + f"; load1={results['machine']['loadavg_1m']:.2f}"
    return line + missed_note(missed_in(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--rotations", type=int, default=4, help="good pairs published")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between swaps")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}

    def scenarios(workdir: Path) -> dict[str, Any]:
        for name in args.only or list(SCENARIOS):
            (workdir / name).mkdir()
            results[name] = SCENARIOS[name](args, workdir / name)
        return results

    if in_workdir("webhook_faults", scenarios) is None:
        return 2
    ok = all_checks_met(results)
    return finish(ok, results, args.json, summary(ok, results))


if __name__ == "__main__":
    sys.exit(main())
