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
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout

from bench.harness import (
    assert_patches,
    cores,
    finish,
    floor,
    in_workdir,
    machine,
    make_material,
    missed,
    missed_note,
    ratio,
    rss_kib,
    sample,
    verdict,
    webhook,
    wrk,
)

REVIEWS_TARGET = 100_000
CONNECTIONS = 64
RSS_TARGET = 1.1


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


# --- this bench -------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> tuple[bool, dict[str, Any]]:
    server_cpu, load_cpu = cores()
    material = make_material(workdir / "certs")

    with floor(workdir, material, cpu=server_cpu) as bare:
        floor_load = wrk(
            f"{bare.url}/mutate",
            connections=args.connections,
            seconds=args.floor_seconds,
            cpu=load_cpu,
            what="floor",
        )

    with webhook(workdir, material, cpu=server_cpu) as hook:
        assert_patches(hook, material.ca_cert)
        pid = hook.pid
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
    return (
        f"{verdict('webhook_load', ok)} reviews={s['requests']} "
        f"c={results['connections']} rps={s['rps']:.0f} ({results['rps_ratio']:.2f}x floor "
        f"{f['rps']:.0f}) p50={s['p50_ms']:.2f}ms ({results['p50_ratio']:.2f}x) "
        f"p99={s['p99_ms']:.2f}ms ({results['p99_ratio']:.2f}x floor {f['p99_ms']:.2f}ms) "
        f"failed={s['connect'] + s['read'] + s['write'] + s['timeout'] + s['status']} "
        f"rss_warm={rss['after_warmup'] / 1024:.1f}MiB rss_end={rss['end'] / 1024:.1f}MiB "
        f"({rss['ratio_end_to_warm']:.3f}x) peak={rss['peak_during'] / 1024:.1f}MiB "
        f"load1={results['machine']['loadavg_1m']:.2f}" + missed_note(missed(results["checks"]))
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
