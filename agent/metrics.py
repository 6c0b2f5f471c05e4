"""The agent's Prometheus metrics, in a registry of its own (one per agent, so tests and
several agents in one process never share counters)."""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

M = TypeVar("M", Counter, Gauge)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._per_resource: list[Counter | Gauge] = []
        self.registrations = self._metric(
            Counter,
            "virtdev_agent_registrations_total",
            "Successful Register calls to the kubelet, first ones and re-registrations",
        )
        self.reregistrations = self._metric(
            Counter,
            "virtdev_agent_reregistrations_total",
            "Registrations after the first one (after a kubelet restart or a failure)",
        )
        self.restarts = self._metric(
            Counter,
            "virtdev_agent_plugin_restarts_total",
            "Attempts to serve and register that failed and were retried with backoff",
        )
        self.registered = self._metric(
            Gauge,
            "virtdev_agent_registered",
            "1 while the resource is registered with the kubelet",
        )
        self.standing_down = self._metric(
            Gauge,
            "virtdev_agent_standing_down",
            "1 while KubeVirt's own device plugin serves the resource and the agent leaves it",
        )
        self.device_healthy = self._metric(
            Gauge,
            "virtdev_agent_device_healthy",
            "1 when the device node exists and is a character device",
        )
        self.allocations = self._metric(
            Counter,
            "virtdev_agent_allocations_total",
            "Containers given the device by Allocate",
        )
        self.allocation_errors = self._metric(
            Counter,
            "virtdev_agent_allocation_errors_total",
            "Allocate requests refused (unknown device IDs)",
        )
        self.streams = self._metric(
            Gauge,
            "virtdev_agent_list_and_watch_streams",
            "Open ListAndWatch streams",
        )

    def _metric(self, kind: type[M], name: str, documentation: str) -> M:
        """A metric labelled by resource, remembered so `add_resource` shows it at 0."""
        metric = kind(name, documentation, ["resource"], registry=self.registry)
        self._per_resource.append(metric)
        return metric

    def add_resource(self, resource: str) -> None:
        """Make every per-resource series visible at 0 before anything happens."""
        for metric in self._per_resource:
            metric.labels(resource)
