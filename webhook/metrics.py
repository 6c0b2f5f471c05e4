"""Prometheus metrics of the webhook, in a registry of its own: one per app, so tests build many."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Admission is answered in about a millisecond; the API server gives up after timeoutSeconds (≤ 3).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)


@dataclass(frozen=True)
class WebhookMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    patch_operations: Counter
    #: The node view (scheduler-aware injection): see webhook.nodes and webhook.feasibility.
    nodes_synced: Gauge
    nodes_known: Gauge
    feasible_nodes: Gauge
    scheduling_decisions: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WebhookMetrics:
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "virtdev_webhook_requests",
                "Admission requests by endpoint and verdict "
                "(skipped, allowed, patched, warned, denied, bad_request, too_large, error).",
                ["endpoint", "verdict"],
                registry=registry,
            ),
            latency=Histogram(
                "virtdev_webhook_request_duration_seconds",
                "Time to answer an admission request, body read included.",
                ["endpoint"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            patch_operations=Counter(
                "virtdev_webhook_patch_operations",
                "JSON Patch operations returned by /mutate.",
                registry=registry,
            ),
            nodes_synced=Gauge(
                "virtdev_webhook_node_view_synced",
                "1 while the webhook's list/watch of nodes is in sync with the API server, else 0 "
                "(also 0 when no cluster is configured).",
                registry=registry,
            ),
            nodes_known=Gauge(
                "virtdev_webhook_nodes_known",
                "Nodes in the webhook's view of the cluster.",
                registry=registry,
            ),
            feasible_nodes=Gauge(
                "virtdev_webhook_feasible_nodes",
                "Nodes that could run the last launcher pod decided on, devices included.",
                registry=registry,
            ),
            scheduling_decisions=Counter(
                "virtdev_webhook_scheduling_decisions",
                "Launcher pods decided on against the node view, by outcome (feasible, warned, "
                "emulated, denied, migration, unsynced).",
                ["outcome"],
                registry=registry,
            ),
        )
