"""A launcher admission against the live index answers as against the nodes one by one, even when
the index answers from memory.

The index remembers each decision under `feasibility.launcher_question` — the pod's placement
fields and containers' resources as they arrived, the devices /mutate injects, the policy — and
admission looks it up before the shape check of those fields and the request arithmetic. So the
second launcher of a VM pool costs a dict lookup. These tests check that the key holds all the
decision reads: admissions in sequence (repeats included), with updates in between, answer
exactly as the per-node decision does.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webhook.nodes.test_feasibility import TUN, node
from tests.webhook.nodes.test_index import NAMES, clusters, nodes, pods
from virtdev import catalogue
from webhook.admission import Request, mutate_review_decided
from webhook.nodes.feasibility import KVM, Node, NodeSnapshot, launcher_question
from webhook.nodes.index import NodeIndex
from webhook.options import NO_KVM_POLICIES, NoKvmPolicy
from webhook.rules.policy import LauncherPolicy
from webhook.rules.shapes import BadInput

POLICY = LauncherPolicy()
SCHEDULABLE = {"kubevirt.io/schedulable": "true"}


def request(pod: dict[str, Any], name: str = "virt-launcher-a") -> Request:
    """The CREATE review of `pod` under `name`, built as a value rather than through
    `offline.as_request`, which writes JSON: some pods here are ones orjson cannot write."""
    pod = copy.deepcopy(pod)
    pod["metadata"]["name"] = name
    return Request(
        api_version="admission.k8s.io/v1",
        uid=f"uid-{name}",
        kind="Pod",
        resource="pods",
        sub_resource="",
        operation="CREATE",
        namespace="vms",
        name=name,
        object=pod,
        old_object=None,
        username=catalogue.KUBEVIRT_CONTROLLERS[0],
    )


def launcher(**spec: Any) -> dict[str, Any]:
    """A privileged v0.6-style launcher: /mutate injects kvm and tun into compute."""
    compute = {
        "name": "compute",
        "image": "quay.io/kubevirt/virt-launcher:v0.6.0",
        "command": ["/usr/share/kubevirt/virt-launcher", "--name", "testvmi"],
        "securityContext": {"privileged": True, "runAsUser": 0},
        "resources": {"requests": {"memory": "1173393408"}},
    }
    spec.setdefault("containers", [compute])
    spec.setdefault("nodeSelector", dict(SCHEDULABLE))
    labels = {catalogue.LAUNCHER_LABEL_KEY: catalogue.LAUNCHER_LABEL_VALUE}
    return {"metadata": {"labels": labels}, "spec": spec}


def indexed(cluster: list[Node]) -> tuple[NodeIndex, NodeSnapshot]:
    index = NodeIndex()
    for each in cluster:
        index.put(each)
    return index, NodeSnapshot(synced=True, index=index)


def outcome(pod: dict[str, Any], name: str, nodes: NodeSnapshot, policy: NoKvmPolicy) -> Any:
    """Everything an admission says, comparable."""
    answer, decision = mutate_review_decided(
        request(pod, name), POLICY, nodes=nodes, no_kvm_policy=policy
    )
    return (
        answer.allowed,
        answer.message,
        answer.patch,
        answer.warnings,
        answer.audit_annotations,
        decision,
    )


# --- the key ------------------------------------------------------------------------------------


def question(
    pod: dict[str, Any], injected: tuple[str, ...] = (KVM, TUN), policy: str = "warn"
) -> Any:
    return launcher_question(pod, injected, policy)


def test_the_launchers_of_one_pool_ask_the_same_question() -> None:
    """What differs between two VMs of a pool — names, uids, args — is not in the key."""
    first = launcher()
    second = copy.deepcopy(first)
    second["metadata"]["name"] = "virt-launcher-b"
    second["metadata"]["labels"]["kubevirt.io/created-by"] = "another-uid"
    second["spec"]["containers"][0]["command"][-1] = "other-vmi"
    second["spec"]["hostname"] = "other-vmi"
    assert question(first) == question(second)


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["spec"].update(nodeSelector={"zone": "a"}),
        lambda p: p["spec"].update(nodeName="n1"),
        lambda p: p["spec"].update(tolerations=[{"operator": "Exists"}]),
        lambda p: p["spec"].update(affinity={"nodeAffinity": {"x": 1}}),
        lambda p: p["metadata"]["labels"].update({catalogue.MIGRATION_JOB_LABEL: "job"}),
        lambda p: p["spec"]["containers"][0]["resources"].update(limits={KVM: "1"}),
        lambda p: p["spec"].update(initContainers=[{"name": "i", "restartPolicy": "Always"}]),
    ],
    ids=["nodeSelector", "nodeName", "tolerations", "affinity", "migration", "limits", "sidecar"],
)
def test_every_field_the_decision_reads_is_in_the_question(change: Any) -> None:
    pod = launcher()
    before = question(pod)
    change(pod)
    assert question(pod) != before


def test_the_devices_injected_and_the_policy_are_in_the_question() -> None:
    pod = launcher()
    assert question(pod, (KVM, TUN)) != question(pod, (TUN,))
    assert question(pod, policy="warn") != question(pod, policy="deny")


def test_a_question_never_equals_a_key_the_index_writes_itself() -> None:
    key = question(launcher())
    assert key is not None and key.startswith(b"launcher:") and not key.startswith(b"[")


def test_a_pod_orjson_cannot_write_asks_no_question() -> None:
    pod = launcher(tolerations=[{"operator": "Exists", "tolerationSeconds": 10**30}])
    assert question(pod) is None


# --- admissions through the index -------------------------------------------------------------


def test_the_second_launcher_of_a_pool_is_answered_from_memory_until_a_fact_changes() -> None:
    index, snapshot = indexed([node("a", labels=SCHEDULABLE), node("b", labels=SCHEDULABLE)])
    pod = launcher()
    key = question(pod)
    assert key is not None and index.remembered(key) is None
    first = outcome(pod, "virt-launcher-a", snapshot, "warn")
    assert first[-1].feasible == 2 and index.remembered(key) is first[-1]
    second = outcome(pod, "virt-launcher-b", snapshot, "warn")
    assert second[-1] is first[-1] and second[2] == first[2]
    index.put(node("a", labels=SCHEDULABLE, ready="False"))  # a fact changes: forgotten
    assert index.remembered(key) is None
    third = outcome(pod, "virt-launcher-c", snapshot, "warn")
    assert third[-1].feasible == 1 and third[-1].ruled_out == {"NotReady": 1}


def test_a_remembered_question_does_not_let_a_malformed_pod_through() -> None:
    """The shape check is skipped only for bytes equal to those of a pod that passed it."""
    _, snapshot = indexed([node("a", labels=SCHEDULABLE)])
    outcome(launcher(), "virt-launcher-a", snapshot, "warn")
    with pytest.raises(BadInput, match=r"tolerations\[0\]\.key: expected a string, got"):
        outcome(launcher(tolerations=[{"key": 5}]), "virt-launcher-b", snapshot, "warn")
    with pytest.raises(BadInput, match=r"nodeSelector\['zone'\]: expected a string"):
        bad = launcher()
        bad["spec"]["nodeSelector"]["zone"] = ["a"]
        outcome(bad, "virt-launcher-c", snapshot, "warn")


def test_a_pod_orjson_cannot_write_is_decided_all_the_same() -> None:
    cluster = [node("a", labels=SCHEDULABLE, taints=[{"key": "x", "effect": "NoSchedule"}])]
    _, snapshot = indexed(cluster)
    pod = launcher(tolerations=[{"operator": "Exists", "tolerationSeconds": 10**30}])
    for name in ("virt-launcher-a", "virt-launcher-b"):
        assert outcome(pod, name, snapshot, "deny") == outcome(
            pod, name, NodeSnapshot(nodes=tuple(cluster), synced=True), "deny"
        )


resources = st.fixed_dictionaries(
    {},
    optional={
        "requests": st.dictionaries(
            st.sampled_from([KVM, TUN, "memory"]), st.sampled_from(["1", "2"]), max_size=2
        ),
        "limits": st.dictionaries(st.sampled_from([KVM, TUN]), st.sampled_from(["1"]), max_size=1),
    },
)


@st.composite
def launchers(draw: st.DrawFn) -> dict[str, Any]:
    """A random pod of `test_index.pods` made a launcher: privileged (devices injected) or
    not, with random device requests of its own."""
    pod = draw(pods())
    compute: dict[str, Any] = {
        "name": "compute",
        "image": draw(
            st.sampled_from(
                ["quay.io/kubevirt/virt-launcher:v0.6.0", "quay.io/kubevirt/virt-launcher:v1.4.0"]
            )
        ),
        "resources": draw(resources),
    }
    if draw(st.booleans()):
        compute["securityContext"] = {"privileged": True}
    pod["spec"]["containers"] = [compute]
    return pod


#: Where two launchers of a pool may differ: the paths of the parts a variant takes from another.
PARTS: dict[str, tuple[str | int, ...]] = {
    "nodeSelector": ("spec", "nodeSelector"),
    "affinity": ("spec", "affinity"),
    "tolerations": ("spec", "tolerations"),
    "nodeName": ("spec", "nodeName"),
    "labels": ("metadata", "labels"),
    "image": ("spec", "containers", 0, "image"),
    "privileged": ("spec", "containers", 0, "securityContext"),
    "resources": ("spec", "containers", 0, "resources"),
}


@st.composite
def pools(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A launcher and variants of it that each take one part from another random launcher: pods
    that agree on all but one thing the decision reads, so a key missing that thing collides."""
    base = draw(launchers())
    pool = [base]
    for _ in range(draw(st.integers(1, 4))):
        other = draw(launchers())
        *parents, last = PARTS[draw(st.sampled_from(sorted(PARTS)))]
        variant = copy.deepcopy(base)
        target: Any = variant
        source: Any = other
        for step in parents:
            target, source = target[step], source[step]
        if last in source:
            target[last] = copy.deepcopy(source[last])
        else:
            target.pop(last, None)
        pool.append(variant)
    return pool


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.data(), pools())
def test_admissions_in_sequence_answer_as_the_nodes_one_by_one(
    cluster: list[Node], data: st.DataObject, pool: list[dict[str, Any]]
) -> None:
    """Each round admits every pod of the pool twice under new names (from memory, the second
    time at least) under each policy, then a node changes; every answer must equal the per-node
    one for the cluster as it is then."""
    current = {n["metadata"]["name"]: n for n in cluster}
    index, snapshot = indexed(list(current.values()))
    for round_ in range(2):
        reference = NodeSnapshot(nodes=tuple(current.values()), synced=True)
        for number, pod in enumerate(pool * 2):
            for policy in NO_KVM_POLICIES:
                name = f"virt-launcher-{round_}-{number}"
                got = outcome(pod, name, snapshot, policy)
                assert got == outcome(pod, name, reference, policy)
        changed = data.draw(nodes(data.draw(st.sampled_from(NAMES))))
        current[changed["metadata"]["name"]] = changed
        index.put(changed)


def test_the_emulated_answer_is_remembered_with_the_devices_it_withheld() -> None:
    """`--no-kvm-policy emulate` withholds kvm where no node has it; the second pod of the pool,
    answered from memory, is patched the same way (tun only)."""
    cluster = [node("a", labels=SCHEDULABLE, allocatable={TUN: "1"}, capacity={TUN: "1"})]
    _, snapshot = indexed(cluster)
    answers = [outcome(launcher(), f"virt-launcher-{n}", snapshot, "emulate") for n in "ab"]
    assert answers[0] == answers[1]
    assert answers[0][-1].outcome == "emulated"
    patched = orjson.dumps(answers[0][2]).decode()
    assert TUN.replace("/", "~1") in patched or TUN in patched
    assert KVM not in patched and KVM.replace("/", "~1") not in patched
