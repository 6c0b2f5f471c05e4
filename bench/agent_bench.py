"""Benchmark the node agent against the floor (bench/floor_plugin.py), in the same run.

Each plugin runs as its own process pinned to one CPU with taskset, the test kubelet
(tests/agent/kubelet.py: real gRPC, real unix sockets, dial-back inside Register) runs here
pinned to another, and real character devices are made with mknod (run as root). Measured:

- resident memory (VmRSS) after registering, allocating, restarts and health flips;
- kubelet restart -> re-registration: from the new kubelet.sock accepting connections to the
  last resource's Register completing;
- device node removed -> the Unhealthy list arriving at the kubelet;
- Allocate latency, one container per call as the kubelet does.

- SIGTERM -> exit (the agent must exit 0 within 2 s, sockets removed).

Targets (exit status 1 when one is missed): RSS <= 1.2x the floor's, re-registration median
< 0.5 s, Unhealthy update median < 0.2 s, SIGTERM handled within 2 s with status 0. One
summary line is printed last.

usage: .venv/bin/python bench/agent_bench.py [--rounds 10] [--allocations 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout
os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no GOAWAY chatter when plugins stop

from bench.harness import (
    BENCH_CPU,
    DEVICE_COUNT,
    KVM,
    PLUGIN_CPU,
    REPO,
    RESOURCES,
    bytecode_env,
    healthy,
    p99,
    plugin_argv,
    plugin_host,
    plugin_subjects,
    registered,
    rss_kib,
    unhealthy,
)
from tests.agent.helpers import make_node
from tests.agent.kubelet import TestKubelet

TARGET_RSS_RATIO = 1.2
TARGET_REREGISTER = 0.5
TARGET_UNHEALTHY = 0.2
TARGET_STOP = 2.0
DEADLINE = 300.0


@dataclass
class Result:
    name: str
    rss_kib: int
    reregister: list[float]
    unhealthy: list[float]
    allocate: list[float]
    stop: float
    exit_code: int


async def start_plugin(
    command: list[str], work: Path, args: argparse.Namespace
) -> tuple[TestKubelet, subprocess.Popen[bytes], Path]:
    """A kubelet, device nodes and the plugin, registered and healthy."""
    plugin_dir, host = plugin_host(work)
    kubelet = TestKubelet(str(plugin_dir))
    await kubelet.start()
    process = subprocess.Popen(
        ["taskset", "-c", str(PLUGIN_CPU), *plugin_argv(command, plugin_dir, host)],
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=args.env,
    )
    await registered(kubelet)
    return kubelet, process, host


async def shut_down(kubelet: TestKubelet, process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    await kubelet.stop()


async def measure(name: str, command: list[str], work: Path, args: argparse.Namespace) -> Result:
    # A warm-up start fills the bytecode cache with everything the plugin imports.
    kubelet, process, _ = await start_plugin(command, work / "warm-up", args)
    await shut_down(kubelet, process)
    kubelet, process, host = await start_plugin(command, work / "measured", args)
    try:
        allocate = []
        for n in range(args.allocations):
            started = time.perf_counter()
            await kubelet.allocate(KVM, [[f"kvm-{n % DEVICE_COUNT:03d}"]])
            allocate.append(time.perf_counter() - started)

        node = host / "dev/kvm"
        flips = []
        for _ in range(args.rounds):
            endpoint = kubelet.endpoints[KVM]
            started = asyncio.get_running_loop().time()
            node.unlink()
            await kubelet.wait_for_devices(KVM, unhealthy)
            flips.append(endpoint.received_at[-1] - started)
            make_node(host, "dev/kvm")
            await kubelet.wait_for_devices(KVM, healthy)

        reregister = []
        for round_ in range(2, args.rounds + 2):
            await kubelet.restart()
            for resource in RESOURCES:
                await kubelet.wait_registered(resource, count=round_)
            last = max(t for r, t in kubelet.registered_at[-len(RESOURCES) :])
            reregister.append(last - kubelet.started_at)
            for resource in RESOURCES:
                await kubelet.wait_for_devices(resource, healthy)

        rss = rss_kib(process.pid)
        started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.wait, 10)
        stop = time.perf_counter() - started
        return Result(name, rss, reregister, flips, allocate, stop, exit_code)
    finally:
        await shut_down(kubelet, process)


async def main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {BENCH_CPU})
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        args.env = bytecode_env(Path(tmp) / "pycache")
        async with asyncio.timeout(DEADLINE):
            for name, command in plugin_subjects().items():
                work = Path(tmp) / name
                work.mkdir()
                results[name] = await measure(name, command, work, args)

    floor, agent = results["floor"], results["agent"]
    for r in (floor, agent):
        print(
            f"{r.name:5}  rss {r.rss_kib / 1024:6.1f} MiB  "
            f"re-register median {median(r.reregister) * 1000:6.1f} ms "
            f"(max {max(r.reregister) * 1000:6.1f})  "
            f"unhealthy median {median(r.unhealthy) * 1000:6.1f} ms "
            f"(max {max(r.unhealthy) * 1000:6.1f})  "
            f"allocate p50 {median(r.allocate) * 1000:5.2f} ms "
            f"p99 {p99(r.allocate) * 1000:5.2f} ms  "
            f"SIGTERM->exit {r.stop * 1000:5.0f} ms (status {r.exit_code})"
        )
    ratio = agent.rss_kib / floor.rss_kib
    missed = []
    if ratio > TARGET_RSS_RATIO:
        missed.append(f"rss ratio {ratio:.2f} > {TARGET_RSS_RATIO}")
    if median(agent.reregister) >= TARGET_REREGISTER:
        missed.append(f"re-register median >= {TARGET_REREGISTER}s")
    if median(agent.unhealthy) >= TARGET_UNHEALTHY:
        missed.append(f"unhealthy median >= {TARGET_UNHEALTHY}s")
    if agent.stop >= TARGET_STOP or agent.exit_code != 0:
        missed.append(f"SIGTERM took {agent.stop:.2f}s, status {agent.exit_code}")

    def vs(key: str) -> str:
        a, f = median(getattr(agent, key)), median(getattr(floor, key))
        return f"{a * 1000:.1f} ms ({a / f:.2f}x floor)"

    print(
        f"SUMMARY agent rss {agent.rss_kib / 1024:.1f} MiB ({ratio:.3f}x floor "
        f"{floor.rss_kib / 1024:.1f} MiB); re-register median {vs('reregister')}; "
        f"unhealthy median {vs('unhealthy')}; allocate p50 {vs('allocate')}; "
        f"SIGTERM->exit {agent.stop * 1000:.0f} ms; "
        + ("all targets met" if not missed else "MISSED: " + ", ".join(missed))
    )
    return 1 if missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="restarts and health flips")
    parser.add_argument("--allocations", type=int, default=300, help="Allocate calls")
    sys.exit(asyncio.run(main(parser.parse_args())))
