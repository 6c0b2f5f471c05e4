"""Sustained load on the real `virtdev webhook`: ≥ 100,000 reviews at 64 connections, flat memory.

The webhook runs as in production (`virtdev webhook`, JSON logs, metrics, uvicorn + httptools +
uvloop over TLS) pinned to one core; `wrk` on the other core POSTs a mix of fixture reviews
(privileged launchers that get patched, a current non-root launcher, a pod that is not a
launcher) round robin over 64 keep-alive HTTPS connections. First a warm-up; then the resident
size (VmRSS from /proc) is read, the sustained run is sized from the warm-up's rate to reach the
target count, and VmRSS is read again at the end (and sampled every second in between).
The floor, `bench/floor_app.py` (the bare ASGI endpoint on the same server stack and TLS), takes
the same load in the same run, so the figures are ratios against it.

Targets: ≥ 100,000 reviews, zero socket errors, zero non-2xx answers, RSS at the end ≤ 1.1×
RSS after warm-up. Loopback only; a few minutes at most. Exit 0 when every target is met, 1 when
one is missed, 2 when the bench could not run. One summary line on stdout (wrk's text on stderr).

    .venv/bin/python bench/webhook_load.py
    .venv/bin/python bench/webhook_load.py --reviews 200000 --json load.json

The helpers here (servers, wrk, RSS) are shared by bench/webhook_faults.py and
bench/webhook_concurrency.py.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the packages, bench.* and tests.* (the stand-in)

from certs.store import Material, ensure_material  # noqa: E402
from tests import support  # noqa: E402  (needs the path above)
from tests.support import free_ports, status_kib  # noqa: E402

LUA = Path(__file__).resolve().parent / "webhook_reviews.lua"
FIXTURES = REPO / "tests" / "fixtures"
#: The mix POSTed by wrk, round robin: three launchers patched, one pod that is not ours.
MIX = (
    "v1-launcher-2018-privileged.json",
    "v1-launcher-current-nonroot.json",
    "v1-launcher-netraw-sysnice.json",
    "v1-non-launcher-pod.json",
)
PATCHED = FIXTURES / "v1-launcher-2018-privileged.json"
STARTUP_TIMEOUT = 60.0
BENCH_LINE = re.compile(
    r"BENCH requests=(\d+) duration_us=(\d+) connect=(\d+) read=(\d+) write=(\d+) status=(\d+) "
    r"timeout=(\d+) p50_us=(\d+) p90_us=(\d+) p99_us=(\d+) max_us=(\d+)"
)
REVIEWS_TARGET = 100_000
CONNECTIONS = 64
RSS_TARGET = 1.1


T = TypeVar("T")


class BenchError(RuntimeError):
    """The bench itself could not run (exit 2), as opposed to a missed target (exit 1)."""


def in_workdir(name: str, run: Callable[[Path], T], *, needs_wrk: bool = True) -> T | None:
    """`run` in a fresh temporary directory, removed afterwards. None, after the one line
    `NAME: ERROR …` the bench exits 2 with, when wrk is missing or the bench could not run."""
    if needs_wrk and shutil.which("wrk") is None:
        print(f"{name}: ERROR wrk not found", flush=True)
        return None
    workdir = Path(tempfile.mkdtemp(prefix=f"{name.replace('_', '-')}-"))
    try:
        return run(workdir)
    except (BenchError, OSError, subprocess.SubprocessError) as error:
        print(f"{name}: ERROR {error}", flush=True)
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def all_checks_met(results: dict[str, Any]) -> bool:
    """Every check of every scenario in `results` (the scenarios are the dicts among them)."""
    return all(
        met
        for result in results.values()
        if isinstance(result, dict)
        for met in result.get("checks", {}).values()
    )


def finish(ok: bool, results: dict[str, Any], json_path: Path | None, summary: str) -> int:
    """Write every figure to `json_path` when asked, print the summary line: exit 0 or 1."""
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(summary, flush=True)
    return 0 if ok else 1


# --- the machine and the cores ----------------------------------------------------------------


def cores() -> tuple[str | None, str | None]:
    """(server core, load core): different cores when there are two and taskset exists."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return "0", "1"
    return None, None


def pinned(cpu: str | None, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None else list(command)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg_1m": os.getloadavg()[0],
    }


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS, in KiB)."""
    return status_kib(pid, "VmRSS")


@dataclass
class RssSampler:
    """VmRSS every `interval` seconds in a thread, while a load runs."""

    pid: int
    interval: float = 1.0
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, ValueError):  # gone, or exiting
                self.samples.append(rss_kib(self.pid))


# --- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        assert self.metrics_port is not None
        return support.metrics_text(self.metrics_port)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def sample(metrics: str, name: str) -> float:
    """One sample of Prometheus text (name with its labels, as exposed); 0 when absent."""
    value = support.sample(metrics, name)
    return 0.0 if value is None else value


def make_material(directory: Path) -> Material:
    """A CA and a serving certificate for 127.0.0.1, made with the project's own code."""
    return ensure_material(directory, dns_names=("localhost",), ip_addresses=("127.0.0.1",))


def wait_until(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
    """support.until_ready, failing as a bench does."""
    try:
        support.until_ready(process, check, what, STARTUP_TIMEOUT)
    except support.NotStarted as error:
        raise BenchError(str(error)) from None


@contextlib.contextmanager
def webhook(
    workdir: Path,
    *,
    cert: Path,
    key: Path,
    cpu: str | None,
    extra: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> Iterator[Server]:
    """`virtdev webhook` as deployed (JSON logs at info), ready once /readyz answers 200
    (tests/support.py starts and stops it); `prefix` runs it, after the pinning to `cpu`."""
    try:
        started = support.start_webhook(
            workdir, *extra, tls=(cert, key), prefix=[*pinned(cpu, ()), *prefix]
        )
    except support.NotStarted as error:
        raise BenchError(str(error)) from None
    try:
        yield Server("webhook", started.process, started.port, started.metrics_port, started.log)
    finally:
        started.stop()


@contextlib.contextmanager
def floor(workdir: Path, *, cert: Path, key: Path, cpu: str | None) -> Iterator[Server]:
    """bench/floor_app.py: the bare ASGI endpoint on the same stack, ready once it answers."""
    (port,) = free_ports(1)
    log = workdir / f"floor-{port}.log"
    command = [
        sys.executable, str(REPO / "bench" / "floor_app.py"), "--port", str(port),
        "--tls-cert", str(cert), "--tls-key", str(key),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            pinned(cpu, command), stdout=sink, stderr=subprocess.STDOUT, cwd=REPO
        )
    server = Server("floor", process, port, None, log)
    try:
        wait_until(lambda: "floor ready" in log.read_text(errors="replace"), "floor", process)
        yield server
    finally:
        support.stop(process, timeout=15)


def post(port: int, path: str, body: bytes, ca_cert: Path) -> tuple[int, dict[str, Any]]:
    """One review over a fresh verified HTTPS connection: (status, decoded JSON body)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer: dict[str, Any] = json.loads(response.read())
        return response.status, answer
    finally:
        connection.close()


def assert_patches(server: Server, ca_cert: Path) -> None:
    """The server really answers /mutate with a patch (a floor would not)."""
    status, answer = post(server.port, "/mutate", PATCHED.read_bytes(), ca_cert)
    if status != 200 or answer["response"].get("patchType") != "JSONPatch":
        raise BenchError(f"{server.name}: /mutate answered {status} {answer}")


# --- wrk ------------------------------------------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    connect: int
    read: int
    write: int
    status: int
    timeout: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def failed(self) -> int:
        """Requests without a 2xx answer: socket errors and non-2xx statuses."""
        return self.socket_errors + self.status

    def brief(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 1), "failed": self.failed}


def wrk_command(
    url: str,
    *,
    connections: int,
    seconds: float,
    cpu: str | None,
    threads: int = 1,
    timeout_s: int = 5,
) -> list[str]:
    return pinned(
        cpu,
        [
            "wrk", f"-t{min(threads, connections)}", f"-c{connections}",
            f"-d{max(1, math.ceil(seconds))}s", f"--timeout={timeout_s}s", "-s", str(LUA), url,
        ],
    )  # fmt: skip


def wrk_env(bodies: Sequence[Path] | None = None, *, close: bool = False) -> dict[str, str]:
    files = bodies if bodies is not None else [FIXTURES / name for name in MIX]
    return {**os.environ, "BENCH_BODIES": ":".join(map(str, files)), "BENCH_CLOSE": "1" * close}


def parse_wrk(stdout: str, what: str) -> Load:
    match = BENCH_LINE.search(stdout)
    if match is None:
        raise BenchError(f"wrk ({what}) printed no summary:\n{stdout[-2000:]}")
    n = [int(value) for value in match.groups()]
    return Load(
        requests=n[0], seconds=n[1] / 1e6, connect=n[2], read=n[3], write=n[4], status=n[5],
        timeout=n[6], p50_ms=n[7] / 1000, p90_ms=n[8] / 1000, p99_ms=n[9] / 1000,
        max_ms=n[10] / 1000,
    )  # fmt: skip


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    cpu: str | None,
    bodies: Sequence[Path] | None = None,
    close: bool = False,
    what: str = "",
) -> Load:
    """Run wrk to the end and parse its summary line; wrk's own text goes to stderr."""
    command = wrk_command(url, connections=connections, seconds=seconds, cpu=cpu)
    result = subprocess.run(
        command,
        env=wrk_env(bodies, close=close),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    print(result.stdout, file=sys.stderr, end="")
    if result.returncode != 0:
        raise BenchError(f"wrk ({what}) exited {result.returncode}: {result.stderr[-1000:]}")
    return parse_wrk(result.stdout, what)


@dataclass
class BackgroundLoad:
    """wrk running while something else happens (a rotation, a SIGTERM, a dropped watch)."""

    process: subprocess.Popen[str]
    what: str

    def result(self, timeout: float) -> Load:
        stdout, stderr = self.process.communicate(timeout=timeout)
        print(stdout, file=sys.stderr, end="")
        if self.process.returncode != 0:
            raise BenchError(f"wrk ({self.what}) exited {self.process.returncode}: {stderr}")
        return parse_wrk(stdout, self.what)


def wrk_background(
    url: str,
    *,
    connections: int,
    seconds: float,
    cpu: str | None,
    close: bool = False,
    bodies: Sequence[Path] | None = None,
    what: str = "",
) -> BackgroundLoad:
    command = wrk_command(url, connections=connections, seconds=seconds, cpu=cpu)
    process = subprocess.Popen(
        command,
        env=wrk_env(bodies, close=close),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return BackgroundLoad(process, what)


def ratio(value: float, floor_value: float) -> float:
    return round(value / floor_value, 3) if floor_value else math.nan


# --- this bench -------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> tuple[bool, dict[str, Any]]:
    server_cpu, load_cpu = cores()
    material = make_material(workdir / "certs")
    cert, key = material.tls_cert, material.tls_key

    with floor(workdir, cert=cert, key=key, cpu=server_cpu) as bare:
        floor_load = wrk(
            f"{bare.url}/mutate",
            connections=args.connections,
            seconds=args.floor_seconds,
            cpu=load_cpu,
            what="floor",
        )

    with webhook(workdir, cert=cert, key=key, cpu=server_cpu) as hook:
        assert_patches(hook, material.ca_cert)
        pid = hook.process.pid
        rss_start = rss_kib(pid)
        url = f"{hook.url}/mutate"
        warm = wrk(
            url, connections=args.connections, seconds=args.warmup_seconds, cpu=load_cpu,
            what="warm-up",
        )  # fmt: skip
        rss_warm = rss_kib(pid)
        # Sized from the warm-up's rate, with a margin, to reach the target in one run.
        seconds = min(args.max_seconds, max(10.0, args.reviews / max(warm.rps, 1.0) * 1.25))
        with RssSampler(pid) as sampler:
            sustained = wrk(
                url, connections=args.connections, seconds=seconds, cpu=load_cpu,
                what="sustained",
            )  # fmt: skip
        rss_end = rss_kib(pid)
        assert_patches(hook, material.ca_cert)
        metrics = hook.metrics()

    answered = sum(
        sample(metrics, f'virtdev_webhook_requests_total{{endpoint="mutate",verdict="{v}"}}')
        for v in ("patched", "skipped", "allowed", "warned")
    )
    checks = {
        f"reviews >= {args.reviews}": sustained.requests >= args.reviews,
        "no socket errors": sustained.socket_errors == 0 and warm.socket_errors == 0,
        "no non-2xx answers": sustained.status == 0 and warm.status == 0,
        f"rss end <= {RSS_TARGET}x warm": rss_end <= RSS_TARGET * rss_warm,
        "every review counted by the webhook": answered >= sustained.requests + warm.requests,
    }
    results = {
        "machine": machine(),
        "connections": args.connections,
        "floor": floor_load.brief(),
        "warmup": warm.brief(),
        "sustained": sustained.brief(),
        "rps_ratio": ratio(sustained.rps, floor_load.rps),
        "p50_ratio": ratio(sustained.p50_ms, floor_load.p50_ms),
        "p99_ratio": ratio(sustained.p99_ms, floor_load.p99_ms),
        "rss_kib": {
            "start": rss_start,
            "after_warmup": rss_warm,
            "end": rss_end,
            "peak_during": max(sampler.samples, default=rss_end),
            "every_5s_during": sampler.samples[4::5],
            "ratio_end_to_warm": round(rss_end / rss_warm, 3),
        },
        "webhook_counted": answered,
        "checks": checks,
    }
    return all(checks.values()), results


def summary(ok: bool, results: dict[str, Any]) -> str:
    s, f, rss = results["sustained"], results["floor"], results["rss_kib"]
    missed = [name for name, met in results["checks"].items() if not met]
    return (
        f"webhook_load: {'PASS' if ok else 'FAIL'} reviews={s['requests']} "
        f"c={results['connections']} rps={s['rps']:.0f} ({results['rps_ratio']:.2f}x floor "
        f"{f['rps']:.0f}) p50={s['p50_ms']:.2f}ms ({results['p50_ratio']:.2f}x) "
        f"p99={s['p99_ms']:.2f}ms ({results['p99_ratio']:.2f}x floor {f['p99_ms']:.2f}ms) "
        f"failed={s['connect'] + s['read'] + s['write'] + s['timeout'] + s['status']} "
        f"rss_warm={rss['after_warmup'] / 1024:.1f}MiB rss_end={rss['end'] / 1024:.1f}MiB "
        f"({rss['ratio_end_to_warm']:.3f}x) peak={rss['peak_during'] / 1024:.1f}MiB "
        f"load1={results['machine']['loadavg_1m']:.2f}"
        + (f" missed: {'; '.join(missed)}" if missed else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=REVIEWS_TARGET)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--warmup-seconds", type=float, default=10)
    parser.add_argument("--floor-seconds", type=float, default=10)
    parser.add_argument("--max-seconds", type=float, default=180, help="cap of the sustained run")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    outcome = in_workdir("webhook_load", lambda workdir: run(args, workdir))
    if outcome is None:
        return 2
    ok, results = outcome
    return finish(ok, results, args.json, summary(ok, results))


if __name__ == "__main__":
    sys.exit(main())
