"""The admission metrics kept as plain numbers expose exactly what prometheus_client would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from webhook.rules.answer import VERDICTS
from webhook.serving.metrics import LATENCY_BUCKETS, AdmissionStats, WebhookMetrics

ENDPOINTS = st.sampled_from(["mutate", "validate"])
VERDICT_LABELS = st.sampled_from([*VERDICTS, "bad_request", "error"])
# Bounds themselves, just above them, zero and far beyond the last one.
SECONDS = st.one_of(
    st.sampled_from([0.0, *LATENCY_BUCKETS, 3.0000001, 60.0]),
    st.floats(min_value=0, max_value=10, allow_nan=False),
)
OBSERVATIONS = st.lists(
    st.tuples(ENDPOINTS, VERDICT_LABELS, SECONDS, st.integers(0, 20)), max_size=60
)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's exposition text, but the `_created` timestamps."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@given(OBSERVATIONS)
def test_the_exposition_equals_prometheus_clients_own_metrics(
    observations: list[tuple[str, str, float, int]],
) -> None:
    ours = CollectorRegistry()
    stats = AdmissionStats()
    ours.register(stats)
    theirs = CollectorRegistry()
    requests = Counter("virtdev_webhook_requests", "", ["endpoint", "verdict"], registry=theirs)
    latency = Histogram(
        "virtdev_webhook_request_duration_seconds",
        "",
        ["endpoint"],
        buckets=LATENCY_BUCKETS,
        registry=theirs,
    )
    patch_operations = Counter("virtdev_webhook_patch_operations", "", registry=theirs)
    for endpoint, verdict, seconds, operations in observations:
        stats.observe(endpoint, verdict, seconds, operations)
        requests.labels(endpoint, verdict).inc()
        latency.labels(endpoint).observe(seconds)
        patch_operations.inc(operations)
    expected = samples(theirs)
    got = samples(ours)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_a_new_registry_shows_zero_patch_operations_and_no_requests_yet() -> None:
    metrics = WebhookMetrics.create()
    assert metrics.registry.get_sample_value("virtdev_webhook_patch_operations_total") == 0
    assert metrics.registry.get_sample_value("virtdev_webhook_requests_total") is None
