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
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no GOAWAY chatter when plugins stop

from tests.agent.helpers import make_node  # noqa: E402
from tests.agent.kubelet import TestKubelet  # noqa: E402
from tests.support import status_kib  # noqa: E402
from virtdev import catalogue  # noqa: E402

#: What the agent serves with its defaults (kvm, tun, vhost-net), and the floor too.
DEVICES = catalogue.resolve_devices(catalogue.AGENT_DEVICES)
RESOURCES = tuple(device.resource for device in DEVICES)
NODES = tuple(device.path.lstrip("/") for device in DEVICES)
KVM = catalogue.DEVICES["kvm"].resource
#: Devices per resource, the agent's default; the floor is given the same.
COUNT = catalogue.DEFAULT_DEVICE_COUNT
TARGET_RSS_RATIO = 1.2
TARGET_REREGISTER = 0.5
TARGET_UNHEALTHY = 0.2
TARGET_STOP = 2.0
BENCH_CPU, PLUGIN_CPU = 0, 1
DEADLINE = 300.0


def subjects(*agent_flags: str) -> dict[str, list[str]]:
    """The two plugins measured, as commands ({dir}/{host} filled in per run): the floor, and
    `virtdev agent` launched as in production."""
    python = sys.executable
    return {
        "floor": [python, "bench/floor_plugin.py", "{dir}", "{host}", str(COUNT)],
        "agent": [
            python,
            "-m",
            "virtdev.cli",
            "agent",
            "--device-plugin-dir={dir}",
            "--host-root={host}",
            "--metrics-port=0",
            *agent_flags,
        ],
    }


@dataclass
class Result:
    name: str
    rss_kib: int
    reregister: list[float]
    unhealthy: list[float]
    allocate: list[float]
    stop: float
    exit_code: int


def healthy(devices: list[tuple[str, str]]) -> bool:
    return bool(devices) and all(h == "Healthy" for _, h in devices)


def unhealthy(devices: list[tuple[str, str]]) -> bool:
    return bool(devices) and all(h == "Unhealthy" for _, h in devices)


async def start_plugin(
    command: list[str], work: Path, args: argparse.Namespace
) -> tuple[TestKubelet, subprocess.Popen[bytes], Path]:
    """A kubelet, device nodes and the plugin, registered and healthy."""
    plugin_dir, host = work / "dp", work / "host"
    plugin_dir.mkdir(parents=True)
    for node in NODES:
        make_node(host, node)
    kubelet = TestKubelet(str(plugin_dir))
    await kubelet.start()
    argv = [str(a).format(dir=plugin_dir, host=host) for a in command]
    process = subprocess.Popen(
        ["taskset", "-c", str(PLUGIN_CPU), *argv],
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=args.env,
    )
    for resource in RESOURCES:
        await kubelet.wait_registered(resource)
        await kubelet.wait_for_devices(resource, healthy)
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
            await kubelet.allocate(KVM, [[f"kvm-{n % COUNT:03d}"]])
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

        rss = status_kib(process.pid, "VmRSS")
        started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.wait, 10)
        stop = time.perf_counter() - started
        return Result(name, rss, reregister, flips, allocate, stop, exit_code)
    finally:
        await shut_down(kubelet, process)


def bytecode_env(prefix: Path) -> dict[str, str]:
    """Both plugins load compiled bytecode, as from an installed image, whatever
    PYTHONDONTWRITEBYTECODE says here: compiling sources at start leaves garbage in the heap
    that a deployed agent does not carry. The bytecode goes to a private directory (filled by
    a warm-up start of each plugin), not into the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def median(values: list[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    """The 99th percentile, nearest rank: of 100 values the 99th, of 20 or fewer the largest."""
    return sorted(values)[max(0, math.ceil(len(values) * 0.99) - 1)]


async def main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {BENCH_CPU})
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        args.env = bytecode_env(Path(tmp) / "pycache")
        async with asyncio.timeout(DEADLINE):
            for name, command in subjects().items():
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
