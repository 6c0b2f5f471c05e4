"""Benchmark /mutate against a bare ASGI floor on the same server stack and TLS.

Two servers, one at a time on the same core (`taskset`): the real `virtdev webhook` process
(JSON logs, metrics, FastAPI, the rules) and `bench/floor_app.py` (parse the review with orjson,
answer `allowed`, nothing else), both uvicorn + httptools + uvloop with the TLS context of
`certs.tls.ServingTLS` and the same certificate. `wrk` on the other core POSTs the same fixture
review over keep-alive HTTPS (32 connections by default) for a few seconds per run; the servers
are loaded alternately, at least five times each, and the median of the per-pair ratios is the
result. A third server, the floor with the webhook's admission log line (`floor_app.py
--log-line`), is loaded in the same rotation: it shows what that one line costs on its own, and
the summary says how much CPU per request virtdev may add to reach the target and how much it
adds. Then the pure cost per pod is timed in-process: the rules alone, the whole decision
without HTTP (parse, rules, render), and one JSON log line (the webhook writes one per request).

Targets: /mutate >= 0.8x the floor's requests/s and p99 <= 2x the floor's p99. Loopback only.
Exit 0 when both are met, 1 when one is missed, 2 when the bench itself could not run.

    .venv/bin/python bench/webhook_bench.py            # 5 alternations of 5 s
    .venv/bin/python bench/webhook_bench.py --runs 7 --duration 10 --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the route's annotations here

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the packages, bench.floor_app and tests.support

from bench.webhook_load import wait_until  # noqa: E402  (needs the path above)
from tests.support import free_ports, running_webhook, stop  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "v1-launcher-2018-privileged.json"
LUA = Path(__file__).resolve().parent / "post_review.lua"
RPS_TARGET = 0.8
P99_TARGET = 2.0
BENCH_LINE = re.compile(
    r"BENCH requests=(\d+) duration_us=(\d+) errors=(\d+) p50_us=(\d+) p90_us=(\d+) "
    r"p99_us=(\d+) max_us=(\d+)"
)


@dataclass
class Load:
    server: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    #: CPU time the server process used per answered request (user + system, from /proc).
    cpu_us: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@contextlib.contextmanager
def running(
    command: list[str], *, log: Path, ready: Callable[[subprocess.Popen[bytes]], bool], what: str
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log_file, cwd=REPO, start_new_session=True
        )
    try:
        wait_until(lambda: ready(process), what, process)
        yield process
    finally:
        stop(process, timeout=15)
        if process.stdout is not None:
            process.stdout.close()


def post(port: int, path: str, body: bytes, ca_cert: Path) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path} on port {port}: {response.status} {data[:200]!r}")
        answer: dict[str, Any] = json.loads(data)
        return answer
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, *, cpu: str, connections: int, seconds: int, server: str, pid: int) -> Load:
    cpu_before = cpu_seconds(pid)
    result = subprocess.run(
        [
            "taskset",
            "-c",
            cpu,
            "wrk",
            "--threads",
            "1",
            "--connections",
            str(connections),
            "--duration",
            f"{seconds}s",
            "--timeout",
            "5s",
            "--script",
            str(LUA),
            url,
        ],
        env={**os.environ, "BENCH_BODY": str(FIXTURE)},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    match = BENCH_LINE.search(result.stdout)
    if match is None:
        raise RuntimeError(f"no BENCH line from wrk:\n{result.stdout}\n{result.stderr}")
    requests, duration_us, errors, p50, p90, p99, _ = map(int, match.groups())
    cpu_us = (cpu_seconds(pid) - cpu_before) / max(requests, 1) * 1e6
    return Load(
        server, requests, duration_us / 1e6, errors, p50 / 1e3, p90 / 1e3, p99 / 1e3, cpu_us
    )


# --- the pure cost per pod -------------------------------------------------------------------


def per_call_us(function: Callable[[], object], *, repeats: int = 7) -> float:
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeats, number=number)) / number * 1e6


@contextlib.contextmanager
def json_logs_to_devnull() -> Iterator[None]:
    """Log as `virtdev webhook --log-format json` does, to /dev/null; then restore the root."""
    from virtdev import logs

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with open(os.devnull, "w") as devnull:
        logs.setup("json", stream=devnull)
        try:
            yield
        finally:
            logs.flush()
            root.handlers[:], root.level = saved


def pure_costs() -> dict[str, float]:
    import orjson

    from virtdev import logs
    from webhook.admission import mutate_review
    from webhook.rules.launcher import read_launcher
    from webhook.rules.mutation import mutate
    from webhook.rules.policy import LauncherPolicy
    from webhook.serving import review

    body = FIXTURE.read_bytes()
    policy = LauncherPolicy()
    pod = orjson.loads(body)["request"]["object"]

    def decide() -> bytes:
        request = review.parse(body)
        return orjson.dumps(review.render(request, mutate_review(request, policy)))

    extra = {
        "endpoint": "mutate",
        "uid": "3a5c0e2a-7d8e-4b8f-9f3e-0c1d2e3f4a01",
        "pod": "vms/virt-launcher-testvmi-",
        "operation": "CREATE",
        "verdict": "patched",
        "patch_ops": 6,
        "duration_ms": 0.123,
    }
    logger = logging.getLogger("virtdev.webhook")

    def log_line() -> None:  # as the webhook writes it: `logs.hot`, buffered
        logs.hot(logger, "admission patched", extra)

    with json_logs_to_devnull():
        log_line_us = per_call_us(log_line)

    return {
        "rules_us": per_call_us(lambda: mutate(read_launcher(pod, policy), policy)),
        "decision_us": per_call_us(decide),
        "log_line_us": log_line_us,
    }


# --- the cost per request inside the process, without sockets or TLS -----------------------------


def asgi_scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8443),
        "state": {},
    }


async def call_asgi(app: Any, path: str, body: bytes, count: int) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        if not sent:  # keep only the first message: retained objects would slow the GC down
            sent.append(message)

    for _ in range(count):
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(messages: list[dict[str, Any]] = messages) -> Any:
            return messages.pop() if messages else {"type": "http.disconnect"}

        await app(asgi_scope(path, body), receive, send)
    return sent


def fastapi_floor() -> Any:
    """The floor's work as one FastAPI route: what the framework alone adds per request."""
    import orjson
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()

    @app.post("/")
    async def floor(request: Request) -> Response:
        review = orjson.loads(await request.body())
        answer = {
            "apiVersion": review["apiVersion"],
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    return app


def asgi_costs(*, count: int = 1000, rounds: int = 5, profile_top: int = 0) -> dict[str, float]:
    """µs per request of the webhook's app and of the floor, called directly on one event loop.

    The webhook's app logs as `virtdev webhook --log-format json` does (to /dev/null here);
    `profile_top` > 0 also prints the functions that dominate its time (cProfile).
    """
    import cProfile
    import pstats

    import uvloop

    from bench.floor_app import app as floor_app
    from webhook.serving.app import create_app

    body = FIXTURE.read_bytes()
    root = logging.getLogger()
    with json_logs_to_devnull():
        webhook_app = create_app()
        results: dict[str, float] = {}
        apps = (
            ("floor", floor_app, "/", logging.INFO),
            ("fastapi_floor", fastapi_floor(), "/", logging.INFO),
            ("app", webhook_app, "/mutate", logging.INFO),
            ("app_without_log", webhook_app, "/mutate", logging.WARNING),
        )
        for _, app, path, level in apps:
            root.setLevel(level)
            sent = uvloop.run(call_asgi(app, path, body, 200))  # warm-up and check
            assert sent[0]["status"] == 200, sent[0]
        # Interleaved rounds, the fastest of each kept: on a shared machine the minimum is
        # the figure least disturbed by other processes.
        for _ in range(rounds):
            for name, app, path, level in apps:
                root.setLevel(level)
                started = time.perf_counter()
                uvloop.run(call_asgi(app, path, body, count))
                took = (time.perf_counter() - started) / count * 1e6
                key = f"asgi_{name}_us"
                results[key] = min(results.get(key, took), took)
        root.setLevel(logging.INFO)
        if profile_top:
            profiler = cProfile.Profile()
            profiler.enable()
            uvloop.run(call_asgi(webhook_app, "/mutate", body, count))
            profiler.disable()
            stats = pstats.Stats(profiler).strip_dirs()
            print(f"cProfile of {count} /mutate calls, by own time:")
            stats.sort_stats("tottime").print_stats(profile_top)
            print("by cumulative time:")
            stats.sort_stats("cumulative").print_stats(profile_top)
    return results


# --- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="alternations (default 5, min 5)")
    parser.add_argument("--duration", type=int, default=5, help="whole seconds per load run")
    parser.add_argument("--warmup", type=int, default=1, help="whole seconds of warm-up")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server-cpu", default="0", help="core for the servers (taskset)")
    parser.add_argument("--load-cpu", default="1", help="core for wrk (taskset)")
    parser.add_argument("--webhook-log", help="where the webhook's JSON logs go (default: tmp)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        default=0,
        help="only profile /mutate in-process (no sockets) and print the top N functions",
    )
    args = parser.parse_args(argv)
    if args.profile:
        os.sched_setaffinity(0, {int(args.server_cpu)})
        print(asgi_costs(profile_top=args.profile))
        return 0
    if args.runs < 5:
        parser.error("--runs: at least 5 alternations")
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"webhook bench: {tool} not found", file=sys.stderr)
            return 2
    try:
        return run(args)
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        print(f"webhook bench: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="virtdev-bench-"))
    try:
        return measure(args, work)
    finally:  # on success and on failure alike
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> int:
    from certs.store import ensure_material

    material = ensure_material(work / "certs", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    floor_port, floor_log_port = free_ports(2)
    webhook_log = Path(args.webhook_log) if args.webhook_log else work / "webhook.log"
    on_server_cpu = ["taskset", "-c", args.server_cpu]
    pinned = [*on_server_cpu, sys.executable]
    tls = ["--tls-cert", str(material.tls_cert), "--tls-key", str(material.tls_key)]
    floor_command = [*pinned, str(REPO / "bench" / "floor_app.py"), "--port", str(floor_port), *tls]
    # The floor plus the webhook's admission log line: what that one line costs on its own.
    floor_log_command = [
        *pinned,
        str(REPO / "bench" / "floor_app.py"),
        "--port",
        str(floor_log_port),
        "--log-line",
        *tls,
    ]

    def floor_ready(process: subprocess.Popen[bytes]) -> bool:
        assert process.stdout is not None
        return process.stdout.readline().startswith(b"floor ready")

    with (
        running_webhook(
            work,
            tls=(material.tls_cert, material.tls_key),
            prefix=on_server_cpu,
            log=webhook_log,
        ) as webhook_process,
        running(
            floor_command, log=work / "floor.log", ready=floor_ready, what="floor app"
        ) as floor_process,
        running(
            floor_log_command,
            log=work / "floor-log-line.log",
            ready=floor_ready,
            what="floor app with the log line",
        ) as floor_log_process,
    ):
        body = FIXTURE.read_bytes()
        uid = json.loads(body)["request"]["uid"]
        mutated = post(webhook_process.port, "/mutate", body, material.ca_cert)["response"]
        floor = post(floor_port, "/", body, material.ca_cert)["response"]
        if not (mutated["uid"] == uid and mutated.get("patchType") == "JSONPatch"):
            raise RuntimeError(f"/mutate did not patch the fixture: {mutated}")
        if floor != {"uid": uid, "allowed": True}:
            raise RuntimeError(f"the floor answered {floor}")
        floor_log = post(floor_log_port, "/", body, material.ca_cert)["response"]
        if floor_log != floor:
            raise RuntimeError(f"the floor with the log line answered {floor_log}")

        urls = {
            "mutate": f"https://127.0.0.1:{webhook_process.port}/mutate",
            "floor": f"https://127.0.0.1:{floor_port}/",
            "floor_log": f"https://127.0.0.1:{floor_log_port}/",
        }
        pids = {
            "mutate": webhook_process.pid,
            "floor": floor_process.pid,
            "floor_log": floor_log_process.pid,
        }

        def load(server: str, seconds: int) -> Load:
            return wrk(
                urls[server],
                cpu=args.load_cpu,
                connections=args.connections,
                seconds=seconds,
                server=server,
                pid=pids[server],
            )

        for server in urls:
            load(server, args.warmup)
        pairs: list[tuple[Load, Load]] = []
        logged: list[Load] = []  # the floor with the log line, loaded in the same runs
        servers = list(urls)
        for index in range(args.runs):
            order = servers[index % 3 :] + servers[: index % 3]  # each goes first in turn
            done = {server: load(server, args.duration) for server in order}
            pairs.append((done["mutate"], done["floor"]))
            logged.append(done["floor_log"])
            m, f, fl = done["mutate"], done["floor"], done["floor_log"]
            print(
                f"run {index + 1}: /mutate {m.rps:8.0f} rps p50 {m.p50_ms:6.2f} ms "
                f"p99 {m.p99_ms:6.2f} ms | floor {f.rps:8.0f} rps p50 {f.p50_ms:6.2f} ms "
                f"p99 {f.p99_ms:6.2f} ms | ratio {m.rps / f.rps:.3f} rps, "
                f"{m.p99_ms / f.p99_ms:.2f} p99 | CPU/request {m.cpu_us:.0f} vs {f.cpu_us:.0f} us"
                f" | floor + log line {fl.rps / f.rps:.3f} rps, {fl.cpu_us:.0f} us",
                flush=True,
            )
        log_lines = sum(1 for _ in webhook_log.open("rb"))

    errors = sum(m.errors + f.errors for m, f in pairs) + sum(fl.errors for fl in logged)
    if errors:
        raise RuntimeError(f"{errors} wrk errors (non-2xx answers, timeouts or socket errors)")
    os.sched_setaffinity(0, {int(args.server_cpu)})
    costs = {**pure_costs(), **asgi_costs()}
    rps_ratio = statistics.median(m.rps / f.rps for m, f in pairs)
    p99_ratio = statistics.median(m.p99_ms / f.p99_ms for m, f in pairs)
    results = {
        "runs": args.runs,
        "seconds_per_run": args.duration,
        "connections": args.connections,
        "mutate_rps": statistics.median(m.rps for m, _ in pairs),
        "floor_rps": statistics.median(f.rps for _, f in pairs),
        "mutate_p99_ms": statistics.median(m.p99_ms for m, _ in pairs),
        "floor_p99_ms": statistics.median(f.p99_ms for _, f in pairs),
        "rps_ratio": rps_ratio,
        "p99_ratio": p99_ratio,
        "mutate_cpu_us_per_request": statistics.median(m.cpu_us for m, _ in pairs),
        "floor_cpu_us_per_request": statistics.median(f.cpu_us for _, f in pairs),
        "cpu_ratio": statistics.median(f.cpu_us / m.cpu_us for m, f in pairs),
        # What virtdev may add per request and still reach the target, and what it adds.
        "budget_us_per_request": statistics.median(
            f.cpu_us * (1 / RPS_TARGET - 1) for _, f in pairs
        ),
        "mutate_adds_us_per_request": statistics.median(m.cpu_us - f.cpu_us for m, f in pairs),
        "floor_log_rps": statistics.median(fl.rps for fl in logged),
        "floor_log_ratio": statistics.median(
            fl.rps / f.rps for fl, (_, f) in zip(logged, pairs, strict=True)
        ),
        "log_line_adds_us_per_request": statistics.median(
            fl.cpu_us - f.cpu_us for fl, (_, f) in zip(logged, pairs, strict=True)
        ),
        "webhook_log_lines": log_lines,
        **costs,
        "loads": [asdict(load) for pair in pairs for load in pair]
        + [asdict(load) for load in logged],
    }
    met = rps_ratio >= RPS_TARGET and p99_ratio <= P99_TARGET
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    r, c = results, costs
    print(
        f"webhook bench: /mutate {r['mutate_rps']:.0f} rps vs floor {r['floor_rps']:.0f} rps"
        f" = {rps_ratio:.2f}x (target >= {RPS_TARGET}); p99 {r['mutate_p99_ms']:.2f} ms vs"
        f" {r['floor_p99_ms']:.2f} ms = {p99_ratio:.2f}x (target <= {P99_TARGET});"
        f" server CPU per request {r['mutate_cpu_us_per_request']:.0f} us vs"
        f" {r['floor_cpu_us_per_request']:.0f} us (floor/mutate {r['cpu_ratio']:.2f}x);"
        f" to reach {RPS_TARGET}x virtdev may add {r['budget_us_per_request']:.0f} us of CPU per"
        f" request and adds {r['mutate_adds_us_per_request']:.0f} us; the floor with only the"
        f" admission log line added reaches {r['floor_log_ratio']:.2f}x"
        f" (+{r['log_line_adds_us_per_request']:.0f} us);"
        f" rules {c['rules_us']:.1f} us/pod, parse+rules+render {c['decision_us']:.1f} us/pod,"
        f" JSON log line {c['log_line_us']:.1f} us; in-process per request: app"
        f" {c['asgi_app_us']:.0f} us, app without log line {c['asgi_app_without_log_us']:.0f} us,"
        f" FastAPI floor {c['asgi_fastapi_floor_us']:.0f} us, floor {c['asgi_floor_us']:.0f} us;"
        f" {args.runs} runs x {args.duration} s, {args.connections} connections:"
        f" {'PASS' if met else 'FAIL'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
