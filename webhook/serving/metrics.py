"""Prometheus metrics of the webhook, in a registry of its own: one per app, so tests build many."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

#: The `le` label text prometheus_client writes for a bucket bound ("0.0005", "+Inf").
_le = cast(Callable[[float], str], floatToGoString)

# Admission is answered in about a millisecond; the API server gives up after timeoutSeconds (≤ 3).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)


class AdmissionStats:
    """Requests by endpoint and verdict, their latency, and /mutate's patch operations.

    Every admission updates these. prometheus_client's Counter and Histogram take a lock per
    update and walk the buckets in Python: about 19,000 instructions per admission for the
    three, as much as parsing the review. Here an update is a few additions on the event loop,
    and the metric families are built only when /metrics is scraped (a custom collector).
    """

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self._bounds = tuple(buckets)
        self._requests: dict[tuple[str, str], int] = {}
        #: Per endpoint: observations per bucket (the last one above every bound), then the sum.
        self._latency: dict[str, list[float]] = {}
        self._patch_operations = 0

    def observe(self, endpoint: str, verdict: str, seconds: float, patch_operations: int) -> None:
        key = (endpoint, verdict)
        self._requests[key] = self._requests.get(key, 0) + 1
        counts = self._latency.get(endpoint)
        if counts is None:
            counts = self._latency[endpoint] = [0.0] * (len(self._bounds) + 2)
        counts[bisect.bisect_left(self._bounds, seconds)] += 1  # the first bound >= seconds
        counts[-1] += seconds
        self._patch_operations += patch_operations

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "virtdev_webhook_requests",
            "Admission requests by endpoint and verdict "
            "(skipped, allowed, patched, warned, denied, bad_request, too_large, error).",
            labels=["endpoint", "verdict"],
        )
        for (endpoint, verdict), count in sorted(list(self._requests.items())):
            requests.add_metric([endpoint, verdict], count)
        yield requests
        latency = HistogramMetricFamily(
            "virtdev_webhook_request_duration_seconds",
            "Time to answer an admission request, body read included.",
            labels=["endpoint"],
        )
        for endpoint, live in sorted(list(self._latency.items())):
            counts = list(live)  # one consistent copy: the event loop may be adding
            buckets: list[tuple[str, float]] = []
            total = 0.0
            for bound, observed in zip([*self._bounds, math.inf], counts[:-1], strict=True):
                total += observed
                buckets.append((_le(bound), total))  # cumulative, as Prometheus wants them
            latency.add_metric([endpoint], buckets, sum_value=counts[-1])
        yield latency
        yield CounterMetricFamily(
            "virtdev_webhook_patch_operations",
            "JSON Patch operations returned by /mutate.",
            value=self._patch_operations,
        )

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Tally:
    """A counter with labels, counted on the hot path: `labels(*values).inc()` as
    prometheus_client's Counter, but a dict look-up and an addition (the Counter's
    `labels().inc()` takes a lock and validates the labels: ~12,000 instructions a request);
    the family is built when /metrics is scraped."""

    def __init__(self, name: str, documentation: str, *labels: str) -> None:
        self.name, self.documentation, self.label_names = name, documentation, list(labels)
        self._counts: dict[tuple[str, ...], _Count] = {}

    def labels(self, *values: str) -> _Count:
        count = self._counts.get(values)
        if count is None:
            count = self._counts[values] = _Count()
        return count

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
        for values, count in sorted(list(self._counts.items())):
            family.add_metric(list(values), count.value)
        yield family

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class FeasibleNodes:
    """`virtdev_webhook_feasible_nodes`: `set(value)` as a Gauge's, an assignment (no lock)."""

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "virtdev_webhook_feasible_nodes",
            "Nodes that could run the last launcher pod decided on, devices included.",
            value=self.value,
        )

    def describe(self) -> Iterator[Metric]:
        return self.collect()


@dataclass(frozen=True)
class WebhookMetrics:
    registry: CollectorRegistry
    #: Requests, latency and patch operations (one update per admission): see AdmissionStats.
    admissions: AdmissionStats
    #: The node view (scheduler-aware injection): see webhook.nodes.view and
    #: webhook.nodes.feasibility.
    nodes_synced: Gauge
    nodes_known: Gauge
    #: Updated on every launcher admission: see SchedulingDecisions and FeasibleNodes.
    feasible_nodes: FeasibleNodes
    scheduling_decisions: Tally
    #: Launcher- or hotplug-labelled pods from anyone but KubeVirt's controller, by endpoint.
    untrusted_pods: Tally
    #: Pods refused (or, under --enforcement warn, that would be), by check broken and profile.
    denials: Tally

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WebhookMetrics:
        registry = registry if registry is not None else CollectorRegistry()
        admissions = AdmissionStats()
        registry.register(admissions)
        feasible_nodes = FeasibleNodes()
        scheduling_decisions = Tally(
            "virtdev_webhook_scheduling_decisions",
            "Launcher pods decided on against the node view, by outcome (feasible, warned, "
            "emulated, denied, migration, unsynced).",
            "outcome",
        )
        untrusted_pods = Tally(
            "virtdev_webhook_untrusted_pods",
            "Launcher- or hotplug-labelled pods whose request came from anyone but KubeVirt's "
            "controller (--kubevirt-controllers), judged by Pod Security baseline, by endpoint.",
            "endpoint",
        )
        denials = Tally(
            "virtdev_webhook_denials",
            "Pods refused by the rules (verdict denied), or admitted with warnings under "
            "--enforcement warn (verdict warned), by endpoint, Pod Security check broken "
            "(control, PSA's id) and the profile that judged (v0.20, v1.7+, baseline).",
            "endpoint",
            "verdict",
            "control",
            "profile",
        )
        for collector in (feasible_nodes, scheduling_decisions, untrusted_pods, denials):
            registry.register(collector)
        return cls(
            registry=registry,
            admissions=admissions,
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
            feasible_nodes=feasible_nodes,
            scheduling_decisions=scheduling_decisions,
            untrusted_pods=untrusted_pods,
            denials=denials,
        )
