"""What the webhook keeps between reviews is bounded in bytes, whatever the pods carry.

A pod's placement fields, resource names and image references are the requester's to write,
up to the API server's request limit. The remembered scheduling decisions and the image-tag
cache keep at most a fixed number of entries; these tests show each entry is of bounded size
too: the decisions are keyed by a digest, their texts held to a byte budget, and long image
references are worked out each time instead of kept. And what the real process logs of a pod
with a mebibyte name is a line of normal size.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.webhook.conftest import fixture_bytes
from tests.webhook.nodes.test_feasibility import BOTH, TUN, node, pod
from tests.webhook.nodes.test_index import assert_same_decisions, indexed
from tests.webhook.serving.test_e2e import start_webhook
from virtdev import catalogue, logs
from webhook.nodes.feasibility import (
    KVM,
    MAX_QUESTION_BYTES,
    RAW_KEY_BYTES,
    Pod,
    decide,
    launcher_question,
)
from webhook.nodes.index import ANSWER_BYTES, ANSWERS, NodeIndex, _weight
from webhook.rules import profiles

LAUNCHER = {catalogue.LAUNCHER_LABEL_KEY: catalogue.LAUNCHER_LABEL_VALUE}


def tolerating(size: int, seed: int) -> Pod:
    """A launcher whose tolerations take about `size` bytes, distinct for each seed."""
    key = f"example.com/t{seed}-" + "k" * max(0, size - 60)
    return pod(labels=LAUNCHER, tolerations=[{"key": key, "operator": "Exists"}])


def held_by(index: NodeIndex, pods: list[Any]) -> int:
    """Bytes still allocated once every pod was decided against the index and dropped."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        while pods:
            index.decide(pods.pop(), requests=BOTH)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_question_is_a_key_of_bounded_size_whatever_the_pod_carries() -> None:
    """A real launcher's question is its own key (hashing it would cost more than the rest of
    a remembered decision); a longer one is keyed by its digest."""
    small = launcher_question(tolerating(100, 1), (KVM, TUN), "warn")
    large = launcher_question(tolerating(MAX_QUESTION_BYTES - 1024, 1), (KVM, TUN), "warn")
    assert small is not None and large is not None
    assert len(b"launcher:") < len(small) <= len(b"launcher:") + RAW_KEY_BYTES
    assert len(large) == len(b"launcher:#") + 16
    assert small != large


def test_a_question_over_the_bound_is_decided_all_the_same_and_not_remembered() -> None:
    cluster = [node("a", taints=[{"key": "x", "effect": "NoSchedule"}]), node("b")]
    huge = tolerating(2 * 1024 * 1024, 1)
    assert launcher_question(huge, (KVM, TUN), "warn") is None
    index = indexed(cluster, 32)
    assert_same_decisions(index, cluster, huge, BOTH)
    assert index._answers == {}


def test_decisions_of_a_thousand_distinct_large_pods_hold_a_bounded_number_of_bytes() -> None:
    """Placement fields of 60 KiB each (under the bound, so remembered): what stays is the
    keys and decisions, not the questions (256 of them raw would be 15 MiB)."""
    index = indexed([node("a"), node("b")], 32)
    held = held_by(index, [tolerating(60 * 1024, seed) for seed in range(1000)])
    assert 0 < len(index._answers) <= ANSWERS
    assert held < 512 * 1024, f"{held} bytes held"


def test_the_texts_of_remembered_decisions_stay_within_their_byte_budget() -> None:
    """A resource name is the pod's to write: each decision names one of 30,000 characters."""
    cluster = [node("a"), node("b")]
    index = indexed(cluster, 32)
    for seed in range(200):
        name = f"{catalogue.RESOURCE_DOMAIN}/d{seed}" + "x" * 30_000
        the_pod = pod(labels=LAUNCHER)
        got = index.decide(the_pod, requests={KVM: 1, name: 1})
        assert got == decide(the_pod, cluster, requests={KVM: 1, name: 1})
        weights = sum(_weight(answer) + len(key) for key, answer in index._answers.items())
        assert weights == index._answer_bytes <= ANSWER_BYTES
    assert 0 < len(index._answers) < ANSWERS, "the bytes, not the count, set the bound"


def test_a_decision_remembered_after_the_budget_forgot_the_others_is_still_right() -> None:
    cluster = [node("a"), node("b", ready="False")]
    index = indexed(cluster, 32)
    for seed in range(100):
        name = f"{catalogue.RESOURCE_DOMAIN}/d{seed}" + "x" * 30_000
        index.decide(pod(labels=LAUNCHER), requests={name: 1})
    the_pod = pod(labels=LAUNCHER)
    first = index.decide(the_pod, requests=BOTH)
    assert index.decide(the_pod, requests=BOTH) is first
    assert first == decide(the_pod, cluster, requests=BOTH)


# --- the image-tag cache ----------------------------------------------------------------------


def test_long_image_references_are_worked_out_but_not_remembered() -> None:
    profiles._cached_release_from_image.cache_clear()
    padding = "x" * (2 * 1024 * 1024)
    for seed in range(100):
        image = f"registry.example.com/{padding}{seed}/virt-launcher:v0.20.{seed}"
        assert profiles.release_from_image(image) == (0, 20)
    assert profiles._cached_release_from_image.cache_info().currsize == 0
    assert profiles.release_from_image("quay.io/kubevirt/virt-launcher:v1.4.0") == (1, 4)
    assert profiles._cached_release_from_image.cache_info().currsize == 1


def test_the_image_tag_cache_holds_a_bounded_number_of_bytes() -> None:
    profiles._cached_release_from_image.cache_clear()
    longest = profiles.MAX_CACHED_IMAGE
    images = [f"q.io/{seed:06d}/virt-launcher:v1.4.0".rjust(longest, "r") for seed in range(1000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        while images:
            assert profiles.release_from_image(images.pop()) == (1, 4)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 64 * (longest + 200) + 16 * 1024, f"{held} bytes held"


# --- the log --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_process_logs_a_mebibyte_generate_name_in_a_line_of_normal_size(
    tmp_path: Path,
) -> None:
    review = orjson.loads(fixture_bytes("v1-launcher-2018-privileged.json"))
    name = "virt-launcher-" + "n" * (1024 * 1024)
    review["request"]["object"]["metadata"]["generateName"] = name
    server = start_webhook(tmp_path)
    try:
        assert server.review("/mutate", review)["patchType"] == "JSONPatch"
        assert server.review("/validate", review)["allowed"] is False
    finally:
        server.stop()  # every buffered line written out
    lines = server.log.read_bytes().splitlines()
    assert max(map(len, lines)) < 4096
    logged = [json.loads(line) for line in lines if b'"admission ' in line]
    assert [entry["msg"] for entry in logged] == ["admission patched", "admission denied"]
    for entry in logged:
        assert entry["pod"] == f"vms/{name}"[: logs.FIELD_CHARS] + f"…({len(name) + 4} chars)"
