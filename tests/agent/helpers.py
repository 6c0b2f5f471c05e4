"""Running an in-process agent against the test kubelet."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from agent.app import Agent
from agent.settings import AgentSettings
from virtdev import catalogue

KVM = catalogue.DEVICES["kvm"]
TUN = catalogue.DEVICES["tun"]
VHOST_NET = catalogue.DEVICES["vhost-net"]
#: What an agent with default settings serves.
SERVED = catalogue.resolve_devices(catalogue.AGENT_DEVICES)


def all_have(health: str) -> object:
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
