"""Running an in-process agent against the test kubelet, on real device nodes (the benches
make theirs with `make_node` too)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from agent.app import Agent
from agent.settings import AgentSettings
from virtdev import catalogue

KVM = catalogue.DEVICES["kvm"]
TUN = catalogue.DEVICES["tun"]
VHOST_NET = catalogue.DEVICES["vhost-net"]
#: What an agent with default settings serves.
SERVED = catalogue.resolve_devices(catalogue.AGENT_DEVICES)
#: Major/minor numbers of the real nodes: misc devices 10:232 (kvm), 10:200 (tun), 10:238.
NODES = {"dev/kvm": (10, 232), "dev/net/tun": (10, 200), "dev/vhost-net": (10, 238)}


def make_node(root: Path, relative: str) -> None:
    """A real character device node (mknod: CI runs as root) under `root`."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(*NODES[relative]))


def all_have(health: str) -> Callable[[list[tuple[str, str]]], bool]:
    def check(devices: list[tuple[str, str]]) -> bool:
        return bool(devices) and all(h == health for _, h in devices)

    return check


@contextlib.asynccontextmanager
async def running_agent(
    plugin_dir: Path, host_root: Path, **overrides: object
) -> AsyncIterator[Agent]:
    settings = AgentSettings(
        plugin_dir=str(plugin_dir),
        host_root=str(host_root),
        metrics_host="127.0.0.1",
        metrics_port=0,
        **overrides,  # type: ignore[arg-type]
    )
    agent = Agent(settings)
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(30):
            await agent.started.wait()
        yield agent
    finally:
        agent.stop()
        async with asyncio.timeout(30):
            await task
