"""The agent's Prometheus metrics, in a registry of its own (one per agent, so tests and
several agents in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["resource"]
        self.registrations = Counter(
            "virtdev_agent_registrations_total",
            "Successful Register calls to the kubelet, first ones and re-registrations",
            labels,
            registry=self.registry,
        )
        self.reregistrations = Counter(
            "virtdev_agent_reregistrations_total",
            "Registrations after the first one (after a kubelet restart or a failure)",
            labels,
            registry=self.registry,
        )
        self.restarts = Counter(
            "virtdev_agent_plugin_restarts_total",
            "Attempts to serve and register that failed and were retried with backoff",
            labels,
            registry=self.registry,
        )
        self.registered = Gauge(
            "virtdev_agent_registered",
            "1 while the resource is registered with the kubelet",
            labels,
            registry=self.registry,
        )
        self.standing_down = Gauge(
            "virtdev_agent_standing_down",
            "1 while KubeVirt's own device plugin serves the resource and the agent leaves it",
            labels,
            registry=self.registry,
        )
        self.device_healthy = Gauge(
            "virtdev_agent_device_healthy",
            "1 when the device node exists and is a character device",
            labels,
            registry=self.registry,
        )
        self.allocations = Counter(
            "virtdev_agent_allocations_total",
            "Containers given the device by Allocate",
            labels,
            registry=self.registry,
        )
        self.allocation_errors = Counter(
            "virtdev_agent_allocation_errors_total",
            "Allocate requests refused (unknown device IDs)",
            labels,
            registry=self.registry,
        )
        self.streams = Gauge(
            "virtdev_agent_list_and_watch_streams",
            "Open ListAndWatch streams",
            labels,
            registry=self.registry,
        )

    def add_resource(self, resource: str) -> None:
        """Make every per-resource series visible at 0 before anything happens."""
        for metric in (
            self.registrations,
            self.reregistrations,
            self.restarts,
            self.registered,
            self.standing_down,
            self.device_healthy,
            self.allocations,
            self.allocation_errors,
            self.streams,
        ):
            metric.labels(resource)
