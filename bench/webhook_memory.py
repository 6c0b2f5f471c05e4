"""Memory and log lines of the real `virtdev webhook` under 1,000 distinct ~2 MB reviews.

What a pod carries is its requester's to write, up to the API server's request size, and the
webhook remembers some of it between reviews (scheduling decisions, the image-tag cache) and logs
some of it (the pod's name). This bench shows what stays of 1,000 reviews that differ in
everything kept or logged. The webhook runs as deployed (`virtdev webhook`, JSON logs at info,
TLS) with the node view on: the API stand-in of the tests serves 100 Nodes shaped like real ones
(bench/harness.py's, as in bench/node_view_bench.py), so every launcher is decided against the
view, and remembered.

Each review is the 2018 privileged launcher (patched by /mutate, denied by /validate) made
distinct and ~2 MB: a 512 KiB compute image (`…/kubevirt/virt-launcher:v0.6.0` under a registry
path of its own, so the release is the fixture's), 256 tolerations of ~900 KiB in all (each key
distinct) and a `generateName` of the rest (~520 KiB); every other review has ~60 KiB of
tolerations and a longer name instead: its question is under the size up to which a decision is
remembered, so the remembered decisions are filled too. Each review goes to /mutate and then
/validate, four clients at once over keep-alive HTTPS.

Targets: VmRSS after 1,000 reviews within +24 MiB of VmRSS after the first 10; the longest log
line ≤ 64 KiB; every answer 200, /mutate patching and /validate denying. VmRSS is also read
after every 100 reviews. Exit 0 when met, 1 when missed, 2 when the bench could not run. One
summary line on stdout; about a minute.

    .venv/bin/python bench/webhook_memory.py
    .venv/bin/python bench/webhook_memory.py --reviews 300 --json memory.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout

from bench.harness import (
    FEASIBLE_GAUGE,
    PATCHED,
    SYNCED_GAUGE,
    BenchError,
    all_checks_met,
    api_server,
    cores,
    finish,
    in_workdir,
    machine,
    make_material,
    missed,
    missed_note,
    realistic_node,
    rss_kib,
    sample,
    verdict,
    wait_synced,
    webhook,
)

REVIEWS = 1_000
FIRST = 10
EVERY = 100
CLIENTS = 4
NODES = 100
RSS_TARGET_MIB = 24
LINE_TARGET_BYTES = 64 * 1024
REVIEW_BYTES = 2_000_000
IMAGE_BYTES = 512 * 1024
TOLERATIONS = 256
#: Bytes of tolerations of the reviews that are not remembered, and of those that are (their
#: question stays under webhook.nodes.feasibility.MAX_QUESTION_BYTES, 64 KiB).
LARGE_TOLERATIONS = 900 * 1024
SMALL_TOLERATIONS = 60 * 1024
TIMEOUT_SECONDS = 60


def review(number: int) -> bytes:
    """The fixture launcher's review, made distinct in what the webhook keeps or logs."""
    document = json.loads(PATCHED.read_bytes())
    request = document["request"]
    request["uid"] = f"memory-{number:06d}"
    pod = request["object"]
    tag = f"r{number:06d}-"
    size = SMALL_TOLERATIONS if number % 2 else LARGE_TOLERATIONS
    name_bytes = REVIEW_BYTES - IMAGE_BYTES - size - 12 * 1024
    pod["metadata"]["generateName"] = tag + "n" * (name_bytes - len(tag))
    compute = next(c for c in pod["spec"]["containers"] if c["name"] == "compute")
    registry = f"registry.example.com/{tag}" + "i" * (IMAGE_BYTES - 64)
    compute["image"] = f"{registry}/kubevirt/virt-launcher:v0.6.0"
    key_bytes = size // TOLERATIONS - 50
    pod["spec"]["tolerations"] = [
        {
            "key": f"{tag}{index:03d}-" + "t" * key_bytes,
            "operator": "Exists",
            "effect": "NoSchedule",
        }
        for index in range(TOLERATIONS)
    ]
    return json.dumps(document, separators=(",", ":")).encode()


class Clients:
    """Keep-alive HTTPS connections, one per thread, each opened again when the server closed
    it (the keep-alive timeout between batches)."""

    def __init__(self, port: int, ca_cert: Path) -> None:
        self._port = port
        self._context = ssl.create_default_context(cafile=str(ca_cert))
        self._local = threading.local()
        self.verdicts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPSConnection:
        connection: http.client.HTTPSConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self._port, context=self._context, timeout=TIMEOUT_SECONDS
            )
            self._local.connection = connection
        return connection

    def post(self, path: str, body: bytes) -> dict[str, Any]:
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request("POST", path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        if response.status != 200:
            raise BenchError(f"{path} answered {response.status}: {answer[:300]!r}")
        decoded: dict[str, Any] = json.loads(answer)["response"]
        return decoded

    def one(self, number: int) -> None:
        """Review `number` to /mutate, then to /validate."""
        body = review(number)
        mutated = self.post("/mutate", body)
        validated = self.post("/validate", body)
        with self._lock:
            self.verdicts[
                "patched" if mutated.get("patchType") == "JSONPatch" else "unpatched"
            ] += 1
            self.verdicts["denied" if not validated["allowed"] else "allowed"] += 1


def longest_line(log: Path) -> tuple[int, int]:
    """(bytes of the longest line, lines) of a log file."""
    longest = lines = 0
    with log.open("rb") as stream:
        for line in stream:
            lines += 1
            longest = max(longest, len(line))
    return longest, lines


def run(args: argparse.Namespace, workdir: Path) -> tuple[bool, dict[str, Any]]:
    server_cpu, _ = cores()
    material = make_material(workdir / "certs")
    with api_server(workdir, map(realistic_node, range(args.nodes))) as api:
        watching = [*api.flags, "--no-kvm-policy", "warn"]
        with webhook(workdir, material, cpu=server_cpu, flags=watching) as hook:
            wait_synced(hook, 60)
            pid = hook.pid
            rss_start = rss_kib(pid)
            clients = Clients(hook.port, material.ca_cert)
            rss_after: dict[int, int] = {}
            started = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                done = 0
                for batch_end in [FIRST, *range(EVERY, args.reviews + 1, EVERY)]:
                    list(pool.map(clients.one, range(done, batch_end)))  # errors raise here
                    done = batch_end
                    rss_after[done] = rss_kib(pid)
            seconds = time.monotonic() - started
            metrics = hook.metrics()
            log = hook.log
        longest, lines = longest_line(log)  # once stopped: every buffered line written out
    rss_first, rss_end = rss_after[FIRST], rss_after[max(rss_after)]
    growth_mib = (rss_end - rss_first) / 1024
    reviews = max(rss_after)
    checks = {
        f"rss after {reviews} <= after {FIRST} + {RSS_TARGET_MIB} MiB": growth_mib
        <= RSS_TARGET_MIB,
        f"longest log line <= {LINE_TARGET_BYTES} bytes": longest <= LINE_TARGET_BYTES,
        "every /mutate patched": clients.verdicts["patched"] == reviews,
        "every /validate denied": clients.verdicts["denied"] == reviews,
        "the view synced throughout": sample(metrics, SYNCED_GAUGE) == 1,
        "decided against the view": sample(metrics, FEASIBLE_GAUGE) > 0,
    }
    results = {
        "machine": machine(),
        "nodes": args.nodes,
        "clients": args.clients,
        "reviews": reviews,
        "review_bytes": {"remembered": len(review(1)), "not_remembered": len(review(0))},
        "seconds": round(seconds, 1),
        "reviews_per_s": round(2 * reviews / seconds, 1),
        "rss_kib": {"start": rss_start, **{f"after_{n}": kib for n, kib in rss_after.items()}},
        "rss_growth_mib": round(growth_mib, 1),
        "longest_log_line_bytes": longest,
        "log_lines": lines,
        "verdicts": dict(clients.verdicts),
        "checks": checks,
    }
    return all_checks_met({"run": results}), results


def summary(ok: bool, results: dict[str, Any]) -> str:
    rss = results["rss_kib"]
    reviews = results["reviews"]
    return (
        f"{verdict('webhook_memory', ok)} reviews={reviews} (x2: /mutate, /validate) "
        f"bytes={results['review_bytes']['not_remembered']} "
        f"rss_after_{FIRST}={rss[f'after_{FIRST}'] / 1024:.1f}MiB "
        f"rss_after_{reviews}={rss[f'after_{reviews}'] / 1024:.1f}MiB "
        f"growth={results['rss_growth_mib']:+.1f}MiB (target +{RSS_TARGET_MIB}) "
        f"longest_line={results['longest_log_line_bytes']}B lines={results['log_lines']} "
        f"rate={results['reviews_per_s']:.0f}/s load1={results['machine']['loadavg_1m']:.2f}"
        + missed_note(missed(results["checks"]))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=REVIEWS, help="a multiple of 100")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if args.reviews < EVERY or args.reviews % EVERY:
        parser.error(f"--reviews must be a multiple of {EVERY}")
    outcome = in_workdir("webhook_memory", lambda workdir: run(args, workdir), needs_wrk=False)
    if outcome is None:
        return 2
    ok, results = outcome
    return finish(ok, results, args.json, summary(ok, results))


if __name__ == "__main__":
    sys.exit(main())
