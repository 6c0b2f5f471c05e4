"""The node agent under load and faults, against the floor (bench/floor_plugin.py), same run.

Each plugin runs as its own process pinned with taskset to CPU 1; this script and its test
kubelet (tests/agent/kubelet.py: real gRPC on real unix sockets, dial-back inside Register) run
on CPU 0; the device nodes are real character devices made with mknod (run as root). The floor
and then `virtdev agent` go through the same four scenarios, in a temporary directory:

- restarts: the kubelet restarts N times in a row (wipes every socket, serves kubelet.sock
  again). Counted: re-registrations (must be exactly N per resource); timed: from the new
  kubelet.sock accepting connections to its Register handler receiving the call, and to the
  registration completing (after the kubelet's dial-back), per resource.
- flaps: the device node is removed and made again N times, half of them paced (each change
  waited for at the kubelet, timed), half in rapid bursts with no waiting, every other burst
  ending with the node gone. Every list the kubelet receives within a bound (0.5 s) after a
  burst is watched: the last must be the node's real health. At the end the list must be
  every ID, with the node's real health.
- allocate: rounds of N Allocate calls in flight at once on the kubelet's connection; all
  must succeed with the device; p50/p99 per call.
- kill: the kubelet, now a subprocess, is killed with SIGKILL while the ListAndWatch streams
  are open, left dead a moment, then a new one starts. The agent must see its streams end
  (its log says so), wait, re-register with the next kubelet, and its stream must be re-opened.

Resident memory (VmRSS) is read before and after the four scenarios (growth <= 10%), and the
agent's /metrics are checked against what the kubelet saw. One summary line per scenario and
an overall one; exit 1 when a target is missed, 2 when the bench could not run. About a minute
with the defaults; bounded by a deadline.

usage: .venv/bin/python bench/agent_faults.py [--restarts 50] [--flaps 1000] [--concurrent 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout
os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no GOAWAY chatter when plugins stop

import grpc

from agent.v1beta1 import api_pb2 as api
from bench.harness import (
    BENCH_CPU,
    DEVICE_COUNT,
    KVM,
    PLUGIN_CPU,
    REPO,
    RESOURCES,
    BenchError,
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
from tests.agent.kubelet import CHECKPOINT, TestKubelet
from tests.support import metrics_text

DEADLINE = 600.0
WAIT = 30.0
TARGET_REREGISTER_P50 = 0.5  # s, kubelet.sock accepting -> Register received
TARGET_REREGISTER_P99 = 1.0
TARGET_UPDATE_P99 = 0.2  # s, node changed -> list at the kubelet (paced flaps)
TARGET_CONVERGE = 0.5  # s, end of a burst -> advertised health equals the real one
TARGET_ALLOCATE_P99 = 0.5  # s, one of N concurrent Allocate calls
TARGET_NOTICE = 1.0  # s, kubelet SIGKILLed -> the agent's streams ended
TARGET_RSS_GROWTH = 0.10
#: How long a killed kubelet stays dead before its successor starts.
KUBELET_DOWN = 0.5
#: Flaps per burst, made back to back without waiting.
BURST = 50
IDS = [f"kvm-{n:03d}" for n in range(DEVICE_COUNT)]


class TimedKubelet(TestKubelet):
    """The test kubelet, also noting when each Register call arrives (before the dial-back)."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.received_at: list[tuple[str, float]] = []

    async def Register(
        self, request: api.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> api.Empty:
        self.received_at.append((request.resource_name, asyncio.get_running_loop().time()))
        return await super().Register(request, context)

    def last_received(self, resource: str) -> float:
        return max(t for r, t in self.received_at if r == resource)


def wipe_sockets(directory: str) -> None:
    """What a starting kubelet does first: delete every socket but its checkpoint."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name != CHECKPOINT and stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


# -- the plugin process -------------------------------------------------------------------------


@dataclass
class Plugin:
    name: str
    process: asyncio.subprocess.Process
    #: (loop time read, JSON record) of every log line (the agent only; the floor logs nothing).
    log: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    logged: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        loop = asyncio.get_running_loop()
        async for line in self.process.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not one of ours (a gRPC core message)
            self.log.append((loop.time(), record))
            self.logged.set()

    async def wait_log(self, condition: Callable[[], bool], *, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.logged.clear()
                await self.logged.wait()

    def messages(self, msg: str, since: int = 0) -> list[tuple[float, dict[str, Any]]]:
        return [(t, r) for t, r in self.log[since:] if r.get("msg") == msg]

    def metrics_port(self) -> int | None:
        for _, record in self.log:
            if record.get("msg") == "probe and metrics server listening":
                return int(record["port"])
        return None

    def alive(self) -> bool:
        return self.process.returncode is None


async def start_plugin(name: str, argv: list[str], env: dict[str, str]) -> Plugin:
    logs = name == "agent"
    process = await asyncio.create_subprocess_exec(
        "taskset",
        "-c",
        str(PLUGIN_CPU),
        *argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if logs else subprocess.DEVNULL,
        cwd=REPO,
        env=env,
    )
    plugin = Plugin(name, process)
    if logs:
        plugin.reader = asyncio.create_task(plugin.read_log())
    return plugin


async def stop_plugin(plugin: Plugin) -> str:
    """SIGTERM, then SIGKILL after 10 s: how it ended, for the summary."""
    code = plugin.process.returncode
    if code is not None:
        tail = [r.get("msg") for _, r in plugin.log[-5:]]
        return f"had exited on its own with status {code} (last log lines {tail})"
    loop = asyncio.get_running_loop()
    started = loop.time()
    plugin.process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(10):
            code = await plugin.process.wait()
    except TimeoutError:
        plugin.process.kill()
        await plugin.process.wait()
        return "did not exit within 10 s of SIGTERM"
    finally:
        if plugin.reader is not None:
            await asyncio.gather(plugin.reader, return_exceptions=True)
    return f"SIGTERM -> exit {code} in {ms(loop.time() - started)} ms"


# -- the kubelet as a subprocess (for SIGKILL) --------------------------------------------------


async def kubelet_child(directory: str) -> None:
    """`--kubelet DIR`: a new kubelet that reports, on stdout, when it serves and when every
    resource is registered and streaming; then it runs until killed."""

    def report(**fields: Any) -> None:
        print(json.dumps(fields), flush=True)

    wipe_sockets(directory)
    kubelet = TimedKubelet(directory)
    await kubelet.start()
    report(event="serving", at=kubelet.started_at)
    for resource in RESOURCES:
        await kubelet.wait_registered(resource)
    for resource in RESOURCES:
        await kubelet.wait_for_devices(resource, healthy)
    report(
        event="ready",
        received={r: kubelet.last_received(r) for r in RESOURCES},
        registered={r: max(t for x, t in kubelet.registered_at if x == r) for r in RESOURCES},
        listed={r: kubelet.endpoints[r].received_at[0] for r in RESOURCES},
    )
    await asyncio.Event().wait()


async def spawn_kubelet(directory: Path) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """A kubelet subprocess on the bench's CPU; returns it once every resource streams."""
    process = await asyncio.create_subprocess_exec(
        "taskset",
        "-c",
        str(BENCH_CPU),
        sys.executable,
        __file__,
        "--kubelet",
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    events: dict[str, Any] = {}
    try:
        async with asyncio.timeout(WAIT * 2):
            while "ready" not in events:
                line = await process.stdout.readline()
                if not line:
                    raise BenchError("the kubelet subprocess ended before the plugin registered")
                event = json.loads(line)
                events[event["event"]] = event
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, {"serving": events["serving"]["at"], **events["ready"]}


# -- the scenarios ------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one plugin did in the four scenarios."""

    name: str
    rss_before: int = 0
    rss_after: int = 0
    reregistrations: dict[str, int] = field(default_factory=dict)
    received: list[float] = field(default_factory=list)
    registered: list[float] = field(default_factory=list)
    paced_updates: int = 0
    update: list[float] = field(default_factory=list)
    burst_updates: int = 0
    converge: list[float] = field(default_factory=list)
    flaps_final: str = ""
    allocate: list[float] = field(default_factory=list)
    allocate_ok: int = 0
    allocate_failed: list[str] = field(default_factory=list)
    kills: int = 0
    noticed: list[float] = field(default_factory=list)
    kill_received: list[float] = field(default_factory=list)
    kill_listed: list[float] = field(default_factory=list)
    died: bool = False
    sigterm: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def restarts(kubelet: TimedKubelet, figures: Figures, count: int) -> None:
    before = {r: sum(1 for x in kubelet.registrations if x.resource_name == r) for r in RESOURCES}
    for round_ in range(1, count + 1):
        await kubelet.restart()
        for resource in RESOURCES:
            await kubelet.wait_registered(resource, count=before[resource] + round_)
        for resource in RESOURCES:
            await kubelet.wait_for_devices(resource, healthy)  # the stream is open again
            figures.received.append(kubelet.last_received(resource) - kubelet.started_at)
            done = max(t for r, t in kubelet.registered_at if r == resource)
            figures.registered.append(done - kubelet.started_at)
    figures.reregistrations = {
        r: sum(1 for x in kubelet.registrations if x.resource_name == r) - before[r]
        for r in RESOURCES
    }


async def flaps(kubelet: TimedKubelet, node: Path, host: Path, figures: Figures, n: int) -> None:
    """n flaps (node removed, then made again): half paced, half in bursts."""
    loop = asyncio.get_running_loop()
    paced = n // 2
    endpoint = kubelet.endpoints[KVM]
    start = len(endpoint.lists)

    def grew_past(count: int) -> Callable[[], bool]:
        return lambda: len(endpoint.lists) > count

    for _ in range(paced):
        steps: tuple[tuple[Callable[[], object], Callable[[list[tuple[str, str]]], bool]], ...]
        steps = ((node.unlink, unhealthy), (lambda: make_node(host, "dev/kvm"), healthy))
        for change, check in steps:
            started = loop.time()
            change()
            await kubelet.wait_for_devices(KVM, check)
            figures.update.append(endpoint.received_at[-1] - started)
    figures.paced_updates = len(endpoint.lists) - start

    rng = random.Random(7)
    start, left, burst = len(endpoint.lists), n - paced, 0
    while left > 0:
        size = min(BURST, left)
        left -= size
        burst += 1
        before = len(endpoint.lists)
        for _ in range(size):
            node.unlink()
            make_node(host, "dev/kvm")
            if rng.random() < 0.3:
                os.utime(node)  # a metadata change (ATTRIB) too: no health change
        if burst % 2:
            node.unlink()  # every other burst ends with the node gone
        ended = loop.time()
        real = "Healthy" if node.exists() else "Unhealthy"
        # Every list that arrives within the bound is seen; the last one must be the truth.
        while (window := ended + TARGET_CONVERGE - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await kubelet.wait_until(grew_past(len(endpoint.lists)), timeout=window)
        advertised = {h for _, h in endpoint.lists[-1]}
        if advertised != {real}:
            figures.problems.append(f"flaps: burst {burst} ended {real}, advertised {advertised}")
        if len(endpoint.lists) > before:
            figures.converge.append(max(0.0, endpoint.received_at[-1] - ended))
        else:
            figures.converge.append(0.0)
        if not node.exists():
            make_node(host, "dev/kvm")  # back for the next burst, and waited for
            await kubelet.wait_for_devices(KVM, healthy)
    figures.burst_updates = len(endpoint.lists) - start
    final = endpoint.lists[-1]
    real = "Healthy" if stat.S_ISCHR(os.stat(node).st_mode) else "Unhealthy"
    if [i for i, _ in final] != IDS or {h for _, h in final} != {real}:
        figures.problems.append(f"flaps: final list is not {len(IDS)} x {real}")
    figures.flaps_final = f"{len(final)} x {final[0][1]}" if final else "empty"


async def allocations(
    kubelet: TimedKubelet, figures: Figures, concurrent: int, rounds: int
) -> None:
    stub = kubelet.endpoints[KVM].stub
    loop = asyncio.get_running_loop()

    async def one(n: int) -> None:
        request = api.AllocateRequest(
            container_requests=[api.ContainerAllocateRequest(devices_ids=[IDS[n % len(IDS)]])]
        )
        started = loop.time()
        try:
            response = await stub.Allocate(request, timeout=WAIT)
        except grpc.aio.AioRpcError as error:
            figures.allocate_failed.append(f"{error.code().name}: {error.details()}")
            return
        figures.allocate.append(loop.time() - started)
        spec = response.container_responses[0].devices[0]
        if (spec.host_path, spec.container_path, spec.permissions) != ("/dev/kvm",) * 2 + ("rw",):
            figures.allocate_failed.append(f"wrong answer {spec}")
            return
        figures.allocate_ok += 1

    for _ in range(rounds):
        await asyncio.gather(*(one(n) for n in range(concurrent)))


async def kills(directory: Path, plugin: Plugin, figures: Figures, count: int) -> None:
    """The kubelet SIGKILLed with the streams open, count times; a new one after a while."""
    loop = asyncio.get_running_loop()
    process, _ = await spawn_kubelet(directory)
    try:
        for _ in range(count):
            since = len(plugin.log)
            killed = loop.time()
            process.send_signal(signal.SIGKILL)
            await process.wait()
            if plugin.name == "agent":

                def closed(since: int = since) -> bool:
                    messages = plugin.messages("ListAndWatch stream closed", since)
                    return len(messages) >= len(RESOURCES)

                await plugin.wait_log(closed)
                at = plugin.messages("ListAndWatch stream closed", since)[len(RESOURCES) - 1][0]
                figures.noticed.append(at - killed)
            await asyncio.sleep(KUBELET_DOWN)  # the kubelet stays dead a while: part of the fault
            if not plugin.alive():
                figures.died = True
                raise BenchError(f"{plugin.name} exited while the kubelet was dead")
            process, times = await spawn_kubelet(directory)
            for resource in RESOURCES:
                figures.kill_received.append(times["received"][resource] - times["serving"])
                figures.kill_listed.append(times["listed"][resource] - times["serving"])
            figures.kills += 1
    finally:
        process.kill()
        await process.wait()


def scrape(port: int) -> dict[str, float]:
    """The agent's /metrics for the kvm resource: name -> value."""
    body = metrics_text(port)
    pattern = re.compile(r'^(virtdev_agent_\w+)\{resource="devices\.kubevirt\.io/kvm"\} (\S+)$')
    return {m[1]: float(m[2]) for line in body.splitlines() if (m := pattern.match(line))}


async def run_subject(name: str, argv: list[str], work: Path, args: argparse.Namespace) -> Figures:
    figures = Figures(name)
    plugin_dir, host = plugin_host(work)
    kubelet = TimedKubelet(str(plugin_dir))
    await kubelet.start()
    plugin = await start_plugin(name, plugin_argv(argv, plugin_dir, host), args.env)
    try:
        await registered(kubelet)
        figures.rss_before = rss_kib(plugin.process.pid)
        await allocations(kubelet, figures, args.concurrent, args.allocate_rounds)
        await flaps(kubelet, host / "dev/kvm", host, figures, args.flaps)
        await restarts(kubelet, figures, args.restarts)
        await kubelet.stop()  # the in-process kubelet ends; the rest is with subprocesses
        await kills(plugin_dir, plugin, figures, args.kills)
        if not plugin.alive():
            figures.died = True
            raise BenchError(f"{name} exited during the run")
        # The last kubelet was killed too: let a final one take the registration, then look.
        process, _ = await spawn_kubelet(plugin_dir)
        try:
            figures.rss_after = rss_kib(plugin.process.pid)
            port = plugin.metrics_port()
            if port is not None:
                figures.metrics = await asyncio.to_thread(scrape, port)
        finally:
            process.kill()
            await process.wait()
    finally:
        figures.sigterm = await stop_plugin(plugin)
        await kubelet.stop()
    return figures


async def warm_up(argv: list[str], work: Path, env: dict[str, str]) -> None:
    """Start the plugin once to fill the private bytecode cache (as bench/agent_bench.py)."""
    plugin_dir, host = plugin_host(work)
    kubelet = TestKubelet(str(plugin_dir))
    await kubelet.start()
    plugin = await start_plugin("warm-up", plugin_argv(argv, plugin_dir, host), env)
    try:
        await registered(kubelet)
    finally:
        await stop_plugin(plugin)
        await kubelet.stop()


# -- the verdicts -------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def dist(values: list[float]) -> str:
    if not values:
        return "none"
    return f"p50 {ms(median(values))} p99 {ms(p99(values))} max {ms(max(values))} ms"


def ratio(agent: list[float], floor: list[float], pick: Callable[[list[float]], float]) -> str:
    if not agent or not floor or pick(floor) == 0:
        return "n/a"
    return f"{pick(agent) / pick(floor):.2f}x"


def verdicts(
    agent: Figures, floor: Figures, args: argparse.Namespace
) -> tuple[list[str], list[str]]:
    """One line per scenario (and the overall one); the targets missed are collected."""
    missed: list[str] = list(agent.problems)
    lines = []

    counts = agent.reregistrations
    if any(counts.get(r) != args.restarts for r in RESOURCES):
        missed.append(f"re-registrations {counts} != {args.restarts} each")
    if not agent.received or median(agent.received) >= TARGET_REREGISTER_P50:
        missed.append(f"re-register p50 >= {TARGET_REREGISTER_P50}s")
    if not agent.received or p99(agent.received) >= TARGET_REREGISTER_P99:
        missed.append(f"re-register p99 >= {TARGET_REREGISTER_P99}s")
    lines.append(
        f"restarts: {args.restarts} kubelet restarts, re-registrations "
        + " ".join(f"{r.split('/')[1]} {counts.get(r, 0)}" for r in RESOURCES)
        + f" (floor {' '.join(str(floor.reregistrations.get(r, 0)) for r in RESOURCES)}); "
        f"kubelet.sock accepting -> Register received {dist(agent.received)} "
        f"(floor p50 {ms(median(floor.received))} p99 {ms(p99(floor.received))} ms; "
        f"p50 {ratio(agent.received, floor.received, median)}, "
        f"p99 {ratio(agent.received, floor.received, p99)}); "
        f"-> registered (after dial-back) p50 {ms(median(agent.registered))} ms "
        f"(floor {ms(median(floor.registered))} ms)"
    )

    transitions = 2 * (args.flaps // 2)
    if agent.paced_updates != transitions:
        missed.append(f"paced flaps: {agent.paced_updates} updates for {transitions} changes")
    if not agent.update or p99(agent.update) >= TARGET_UPDATE_P99:
        missed.append(f"update p99 >= {TARGET_UPDATE_P99}s")
    lines.append(
        f"flaps: {args.flaps} flaps ({args.flaps // 2} paced, {args.flaps - args.flaps // 2} in "
        f"{len(agent.converge)} bursts); updates {agent.paced_updates} for {transitions} paced "
        f"changes + {agent.burst_updates} in bursts (floor {floor.paced_updates} + "
        f"{floor.burst_updates}); paced change -> list {dist(agent.update)} (floor p50 "
        f"{ms(median(floor.update))} p99 {ms(p99(floor.update))}; p50 "
        f"{ratio(agent.update, floor.update, median)}); end of burst -> real state advertised "
        f"max {ms(max(agent.converge, default=0))} ms (floor "
        f"{ms(max(floor.converge, default=0))}); final list {agent.flaps_final}, equals the node"
    )

    total = args.concurrent * args.allocate_rounds
    if agent.allocate_ok != total or agent.allocate_failed:
        missed.append(f"allocate: {agent.allocate_ok}/{total} ok {agent.allocate_failed[:3]}")
    if not agent.allocate or p99(agent.allocate) >= TARGET_ALLOCATE_P99:
        missed.append(f"allocate p99 >= {TARGET_ALLOCATE_P99}s")
    lines.append(
        f"allocate: {args.allocate_rounds} rounds of {args.concurrent} concurrent calls, "
        f"{agent.allocate_ok}/{total} ok (floor {floor.allocate_ok}/{total}); "
        f"per call {dist(agent.allocate)} (floor p50 {ms(median(floor.allocate))} p99 "
        f"{ms(p99(floor.allocate))} ms; p50 {ratio(agent.allocate, floor.allocate, median)}, "
        f"p99 {ratio(agent.allocate, floor.allocate, p99)})"
    )

    if agent.kills != args.kills:
        missed.append(f"kill: re-registered after {agent.kills}/{args.kills} kills")
    if len(agent.noticed) != args.kills or max(agent.noticed, default=0) >= TARGET_NOTICE:
        missed.append(f"kill: streams ended later than {TARGET_NOTICE}s or not at all")
    if not agent.kill_received or median(agent.kill_received) >= TARGET_REREGISTER_P50:
        missed.append(f"kill: re-register p50 >= {TARGET_REREGISTER_P50}s")
    lines.append(
        f"kill: {agent.kills}/{args.kills} kubelets SIGKILLed with ListAndWatch open, then "
        f"{KUBELET_DOWN:g} s dead; agent's streams ended after {dist(agent.noticed)}; next "
        f"kubelet serving -> Register received {dist(agent.kill_received)} (floor p50 "
        f"{ms(median(floor.kill_received))} ms; "
        f"{ratio(agent.kill_received, floor.kill_received, median)}); "
        f"-> stream re-opened {dist(agent.kill_listed)} (floor p50 "
        f"{ms(median(floor.kill_listed))} ms)"
    )

    growth = agent.rss_after / agent.rss_before - 1
    if growth > TARGET_RSS_GROWTH:
        missed.append(f"rss grew {growth:.0%}")
    if agent.died or not agent.sigterm.startswith("SIGTERM -> exit 0 "):
        missed.append(f"agent {agent.sigterm}")
    metrics = agent.metrics
    expected = {
        # 50 restarts; the first kubelet subprocess, one per kill, and the last one
        "virtdev_agent_reregistrations_total": args.restarts + 1 + args.kills + 1,
        "virtdev_agent_allocations_total": total,
        "virtdev_agent_allocation_errors_total": 0,
        "virtdev_agent_list_and_watch_streams": 1,
        "virtdev_agent_device_healthy": 1,
        "virtdev_agent_plugin_restarts_total": 0,
    }
    wrong = {k: metrics.get(k) for k, v in expected.items() if metrics.get(k) != v}
    if wrong:
        missed.append(f"metrics {wrong} (expected {expected})")
    lines.append(
        f"SUMMARY rss {agent.rss_before / 1024:.1f} -> {agent.rss_after / 1024:.1f} MiB "
        f"({growth:+.1%}; floor {floor.rss_before / 1024:.1f} -> {floor.rss_after / 1024:.1f} MiB, "
        f"agent {agent.rss_after / floor.rss_after:.3f}x floor after); metrics "
        f"{'consistent' if not wrong else 'WRONG'}; {agent.sigterm}; "
        + ("all targets met" if not missed else "MISSED: " + "; ".join(missed))
    )
    return lines, missed


async def main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("agent_faults: ERROR run as root (mknod)", flush=True)
        return 2
    os.sched_setaffinity(0, {BENCH_CPU})
    results: dict[str, Figures] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="agent-faults-") as tmp:
            args.env = bytecode_env(Path(tmp) / "pycache")
            async with asyncio.timeout(DEADLINE):
                for name, argv in plugin_subjects("--log-format=json").items():
                    await warm_up(argv, Path(tmp) / f"warm-{name}", args.env)
                    results[name] = await run_subject(name, argv, Path(tmp) / name, args)
    except (BenchError, TimeoutError, OSError) as error:
        print(f"agent_faults: ERROR {type(error).__name__}: {error}", flush=True)
        return 2
    lines, missed = verdicts(results["agent"], results["floor"], args)
    for line in lines:
        print(f"agent_faults {line}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--kubelet":
        os.environ["GRPC_VERBOSITY"] = "NONE"
        asyncio.run(kubelet_child(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=50, help="kubelet restarts in a row")
    parser.add_argument("--flaps", type=int, default=1000, help="device node removed and made")
    parser.add_argument("--concurrent", type=int, default=100, help="Allocate calls at once")
    parser.add_argument("--allocate-rounds", type=int, default=10, help="rounds of them")
    parser.add_argument("--kills", type=int, default=10, help="kubelets SIGKILLed")
    sys.exit(asyncio.run(main(parser.parse_args())))
