"""The agent's settings, as the command line (or the config file) gave them."""

from __future__ import annotations

from dataclasses import dataclass

from virtdev import catalogue
from virtdev.catalogue import Device


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    plugin_dir: str = catalogue.DEVICE_PLUGIN_DIR
    host_root: str = "/"
    devices: tuple[Device, ...] = catalogue.resolve_devices(catalogue.AGENT_DEVICES)
    device_count: int = catalogue.DEFAULT_DEVICE_COUNT
    #: The DeviceSpec permissions in Allocate answers; None: from the node's cgroup version at
    #: start, as virt-handler decides (`agent.cgroups`).
    device_permissions: str | None = None
    metrics_host: str = "0.0.0.0"
    metrics_port: int = catalogue.AGENT_METRICS_PORT
    take_over: bool = False
    #: How long KubeVirt's plugin gets to come back (virt-handler retries within 10 s) after
    #: its socket vanished, before the agent takes a resource it stood down for.
    kubevirt_grace: float = 15.0
