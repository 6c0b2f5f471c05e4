"""The live view's index against the per-node decision it replaces: the same answer, always.

`webhook.nodes.feasibility.decide` walks the nodes one by one and is the reference (its filters are
tested table by table in test_feasibility.py). The index must give the very same `Decision` —
outcome, warning, denial message, feasible count, every ruled-out reason counted — for random
clusters and pods drawn from small alphabets, so that selectors, affinity operators, taints and
tolerations, NotReady, cordons and allocatable amounts meet, and after random updates and
deletions too (the index is maintained incrementally).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webhook.nodes.test_feasibility import BOTH, CASES, TUN, node, pod
from virtdev import catalogue
from webhook.nodes.feasibility import KVM, NO_KVM_POLICIES, Node, Pod, decide, node_reason
from webhook.nodes.index import NodeIndex, facts_of

VHOST = f"{catalogue.RESOURCE_DOMAIN}/vhost-net"
NAMES = ["n0", "n1", "n2", "n3", "n4", "n5", "7", "12"]
KEYS = ["cores", "zone"]
VALUES = ["3", "8", "a", ""]
EFFECTS = ["NoSchedule", "NoExecute", "PreferNoSchedule"]
OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Almost"]
AMOUNTS = ["0", "1", "2", "110", "500m", "lots", 3]

labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)
taint = st.fixed_dictionaries(
    {"key": st.sampled_from([*KEYS, "node.kubernetes.io/unschedulable"])},
    optional={"value": st.sampled_from(VALUES), "effect": st.sampled_from(EFFECTS)},
)
devices = st.dictionaries(st.sampled_from([KVM, TUN, VHOST]), st.sampled_from(AMOUNTS), max_size=3)


@st.composite
def nodes(draw: st.DrawFn, name: str) -> Node:
    # Mostly healthy nodes, so that most pods reach the later filters too.
    spec: dict[str, Any] = {
        "taints": draw(st.lists(taint, max_size=2)) if draw(st.booleans()) else []
    }
    if draw(st.integers(0, 3)) == 0:
        spec["unschedulable"] = draw(st.booleans())
    status: dict[str, Any] = {"allocatable": draw(devices), "capacity": draw(devices)}
    ready = draw(st.sampled_from(["True"] * 5 + ["False", "Unknown", None]))
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready}]
    return {"metadata": {"name": name, "labels": draw(labels)}, "spec": spec, "status": status}


@st.composite
def clusters(draw: st.DrawFn) -> list[Node]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    return [draw(nodes(name)) for name in names]


requirement = st.builds(
    lambda key, operator, values: {"key": key, "operator": operator, "values": values},
    st.sampled_from(KEYS),
    st.sampled_from(OPERATORS),
    st.lists(st.sampled_from(VALUES), max_size=2),
)
field_requirement = st.builds(
    lambda key, operator, values: {"key": key, "operator": operator, "values": values},
    st.sampled_from(["metadata.name", "metadata.namespace"]),
    st.sampled_from(OPERATORS),
    st.lists(st.sampled_from(NAMES), max_size=2),
)
term = st.fixed_dictionaries(
    {},
    optional={
        "matchExpressions": st.lists(requirement, max_size=2),
        "matchFields": st.lists(field_requirement, max_size=1),
    },
)
toleration = st.fixed_dictionaries(
    {},
    optional={
        "key": st.sampled_from([*KEYS, "node.kubernetes.io/unschedulable"]),
        "operator": st.sampled_from(["Equal", "Exists", "Gt"]),
        "value": st.sampled_from(VALUES),
        "effect": st.sampled_from(EFFECTS),
    },
)


@st.composite
def pods(draw: st.DrawFn) -> Pod:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["nodeSelector"] = draw(labels)
    if draw(st.booleans()):
        terms = draw(st.lists(term, max_size=3))
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    if draw(st.booleans()):
        spec["tolerations"] = draw(st.lists(toleration, max_size=3))
    if draw(st.integers(0, 9)) == 0:
        spec["nodeName"] = draw(st.sampled_from(NAMES))
    labels_ = {catalogue.LAUNCHER_LABEL_KEY: catalogue.LAUNCHER_LABEL_VALUE}
    if draw(st.integers(0, 4)) == 0:
        labels_[catalogue.MIGRATION_JOB_LABEL] = "job"
    return pod(labels=labels_, **spec)


requests = st.fixed_dictionaries(
    {KVM: st.integers(0, 3)}, optional={TUN: st.integers(0, 2), VHOST: st.integers(0, 1)}
)


def indexed(cluster: list[Node], dense: int) -> NodeIndex:
    index = NodeIndex(dense=dense)
    for each in cluster:
        index.put(each)
    return index


def assert_same_decisions(index: NodeIndex, cluster: list[Node], the_pod: Pod, wanted: Any) -> None:
    for policy in NO_KVM_POLICIES:
        for injected in (True, False):
            expected = decide(
                the_pod, cluster, requests=wanted, no_kvm_policy=policy, kvm_injected=injected
            )
            got = index.decide(
                the_pod, requests=wanted, no_kvm_policy=policy, kvm_injected=injected
            )
            assert got == expected, (policy, injected)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), pods(), requests, st.sampled_from([1, 2, 32]))
def test_the_index_decides_as_the_nodes_one_by_one(
    cluster: list[Node], the_pod: Pod, wanted: dict[str, int], dense: int
) -> None:
    assert_same_decisions(indexed(cluster, dense), cluster, the_pod, wanted)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.data(), pods(), requests, st.sampled_from([1, 2, 32]))
def test_the_index_stays_right_through_updates_and_deletions(
    cluster: list[Node], data: st.DataObject, the_pod: Pod, wanted: dict[str, int], dense: int
) -> None:
    index = indexed(cluster, dense)
    current = {node_["metadata"]["name"]: node_ for node_ in cluster}
    assert_same_decisions(index, cluster, the_pod, wanted)  # remembered: must be forgotten
    for _ in range(data.draw(st.integers(1, 12))):
        name = data.draw(st.sampled_from(NAMES))
        if name in current and data.draw(st.booleans()):
            index.remove(name)
            del current[name]
        else:
            current[name] = data.draw(nodes(name))
            index.put(current[name])
        index.remove("never-there")  # deleting an unknown node is a no-op
    assert len(index) == len(current)
    assert_same_decisions(index, sorted(current.values(), key=str), the_pod, wanted)


@pytest.mark.parametrize(
    ("case", "the_pod", "the_node", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_each_filter_case_rules_a_node_out_for_the_same_reason(
    case: str, the_pod: Pod, the_node: Node, reason: str | None
) -> None:
    assert node_reason(the_pod, the_node, BOTH) == reason  # the reference, as a reminder
    fit = indexed([the_node], 32).fit(the_pod, BOTH)
    assert (fit.feasible, dict(fit.ruled_out)) == ((1, {}) if reason is None else (0, {reason: 1}))


def test_a_heartbeat_changes_nothing_the_filters_read() -> None:
    before = node("n1", labels={"zone": "a"})
    after = node("n1", labels={"zone": "a"})
    after["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-11-28T00:00:10Z"
    after["status"]["images"] = [{"names": ["quay.io/kubevirt/virt-launcher:v1.4.0"]}]
    assert facts_of(before) == facts_of(after)


def test_a_decision_is_remembered_until_a_fact_changes() -> None:
    index = indexed([node("a"), node("b")], 32)
    first = index.decide(pod(), requests=BOTH)
    heartbeat = node("a")
    heartbeat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-11-28T00:00:10Z"
    index.put(heartbeat)
    assert index.decide(pod(), requests=BOTH) is first
    index.put(node("a", ready="False"))
    second = index.decide(pod(), requests=BOTH)
    assert (first.feasible, second.feasible) == (2, 1)
    assert second.ruled_out == {"NotReady": 1}


def test_a_pod_that_cannot_be_a_key_is_decided_all_the_same() -> None:
    """orjson writes integers up to 64 bits: beyond, the decision is not remembered."""
    huge = pod(tolerations=[{"operator": "Exists", "tolerationSeconds": 10**30}])
    cluster = [node("a", taints=[{"key": "x", "effect": "NoSchedule"}])]
    assert_same_decisions(indexed(cluster, 32), cluster, huge, BOTH)


def test_freed_slots_are_reused_so_the_masks_stay_as_wide_as_the_cluster() -> None:
    index = NodeIndex(dense=1)
    for number in range(100):
        index.put(node(f"n{number}"))
    for number in range(100):
        index.remove(f"n{number}")
        index.put(node(f"m{number}"))
    assert len(index) == 100
    assert index._everyone.mask == (1 << 100) - 1


def test_label_strings_are_shared_between_the_nodes_that_carry_them() -> None:
    index = NodeIndex()
    index.put(node("a", labels={"topology.kubernetes.io/zone": "eu-west-1a"}))
    index.put(node("b", labels={"topology.kubernetes.io/zone": "".join(["eu-west-", "1a"])}))
    first, second = (index._facts[index._slot_of[name]] for name in ("a", "b"))
    assert first is not None and second is not None
    assert first.labels[0][1] is second.labels[0][1]


def big_node(number: int) -> Node:
    name = f"node-{number:05d}"
    return node(
        name,
        labels={"kubernetes.io/hostname": name, "zone": str(number % 3)},
        ready="False" if number % 7 == 0 else "True",
        allocatable={KVM: "0" if number % 2 else "110", TUN: "110"},
    )


@pytest.mark.parametrize("policy", NO_KVM_POLICIES)
def test_five_thousand_nodes_dense_and_sparse_facts_together(policy: str) -> None:
    cluster = [big_node(number) for number in range(5000)]
    index = indexed(cluster, 32)
    for the_pod in (
        pod(nodeSelector={"zone": "1"}),
        pod(nodeSelector={"kubernetes.io/hostname": "node-00007"}),
        pod(nodeSelector={"kubernetes.io/hostname": "node-00009"}),
        pod(
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "NotIn",
                                        "values": ["node-00001"],
                                    },
                                    {"key": "zone", "operator": "Gt", "values": ["0"]},
                                ]
                            }
                        ]
                    }
                }
            }
        ),  # fmt: skip
    ):
        for wanted in (BOTH, {KVM: 200}):
            expected = decide(the_pod, cluster, requests=wanted, no_kvm_policy=policy)
            assert index.decide(the_pod, requests=wanted, no_kvm_policy=policy) == expected


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize("bound", ["2", "3", "4", "x", ""])
@pytest.mark.parametrize("field", [False, True])
def test_every_operator_at_its_boundaries(operator: str, bound: str, field: bool) -> None:
    """Gt and Lt around an equal value, In and NotIn on present and absent values, on labels
    and on `metadata.name` (the random clusters above rarely land exactly on a boundary)."""
    cluster = [node("3", labels={"cores": "3"}), node("x", labels={"cores": "x"}), node("n0")]
    key = "metadata.name" if field else "cores"
    requirement = {"key": key, "operator": operator, "values": [bound] if bound else []}
    term = {"matchFields" if field else "matchExpressions": [requirement]}
    the_pod = pod(
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
    )
    for dense in (1, 32):
        assert_same_decisions(indexed(cluster, dense), cluster, the_pod, BOTH)
