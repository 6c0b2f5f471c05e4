"""The agent process: one plugin per resource, one health watch per device node, the probe
server, and a clean stop on SIGTERM/SIGINT (sockets removed, streams told, exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from agent.cgroups import node_device_permissions
from agent.devices import HEALTHY, Health, host_node
from agent.health import HealthState, watch_health
from agent.metrics import AgentMetrics
from agent.plugin import ResourcePlugin
from agent.settings import AgentSettings
from virtdev.probes import ProbeServer

log = logging.getLogger(__name__)


class StartError(RuntimeError):
    """The agent cannot start as configured; the message says which setting and why."""


class Agent:
    """Build with settings, then `await run()` until cancelled or `stop()`."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        self.health: dict[str, HealthState] = {}
        self.plugins: dict[str, ResourcePlugin] = {}
        #: Set (and replaced) whenever a plugin's state or a device's health changes.
        self._changed = asyncio.Event()
        #: One answer for every resource, as virt-handler gives (`agent.cgroups`).
        self.permissions = settings.device_permissions or node_device_permissions()
        for device in settings.devices:
            self.metrics.add_resource(device.resource)
            self.health[device.name] = HealthState()
            self.plugins[device.name] = ResourcePlugin(
                device=device,
                settings=settings,
                permissions=self.permissions,
                health=self.health[device.name],
                metrics=self.metrics,
                on_change=self._notify,
            )
        self.probes = ProbeServer(
            host=settings.metrics_host,
            port=settings.metrics_port,
            registry=self.metrics.registry,
            ready=self.readiness,
        )
        self._stopping = asyncio.Event()
        #: Set once the probe server listens and the plugins are started.
        self.started = asyncio.Event()

    def readiness(self) -> tuple[bool, str]:
        """Ready only while every resource is registered; the reason names each one's state."""
        ready = all(plugin.ready for plugin in self.plugins.values())
        reason = "; ".join(
            f"{plugin.device.resource}: {plugin.status}" for plugin in self.plugins.values()
        )
        return ready, reason

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float) -> None:
        """Wait until `condition()` holds, re-checked at every change (for tests and tools)."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed  # before the check: a change in between still wakes us
                if condition():
                    return
                await changed.wait()

    def stop(self) -> None:
        self._stopping.set()

    def _health_changed(self, resource: str, path: str) -> Callable[[Health], None]:
        gauge = self.metrics.device_healthy.labels(resource)

        def changed(health: Health) -> None:
            gauge.set(1 if health == HEALTHY else 0)
            self._notify()
            log.info(
                "device health",
                extra={"resource": resource, "node": path, "health": health},
            )

        return changed

    async def run(self) -> None:
        """Run until `stop()` (or cancellation), then take everything down."""
        try:
            await self.probes.start()
        except OSError as error:
            where = f"{self.settings.metrics_host}:{self.settings.metrics_port}"
            raise StartError(
                f"--metrics-port: cannot listen on {where}: {error.strerror or error}"
            ) from None
        tasks: list[asyncio.Task[None]] = []
        try:
            for device in self.settings.devices:
                path = host_node(device, self.settings.host_root)
                tasks.append(
                    asyncio.create_task(
                        watch_health(
                            path,
                            self.health[device.name],
                            on_change=self._health_changed(device.resource, path),
                        ),
                        name=f"health-{device.name}",
                    )
                )
            for plugin in self.plugins.values():
                tasks.append(asyncio.create_task(plugin.run(), name=f"plugin-{plugin.device.name}"))
            stopping = asyncio.create_task(self._stopping.wait())
            self.started.set()
            done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            for task in done - {stopping}:
                task.result()  # plugins and watches never end on their own: surface the bug
                raise RuntimeError(f"{task.get_name()} ended unexpectedly")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.probes.stop()
            log.info("agent stopped")


async def main(settings: AgentSettings) -> int:
    """The process: run the agent until SIGTERM or SIGINT."""
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, agent, signum)
    try:
        await agent.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    return 0


def _on_signal(agent: Agent, signum: int) -> None:
    log.info("stopping", extra={"signal": signal.Signals(signum).name})
    agent.stop()
