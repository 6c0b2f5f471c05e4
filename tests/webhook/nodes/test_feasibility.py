"""The scheduler's filters as virtdev applies them, and the no-kvm policy: pure, table-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest

from virtdev import catalogue
from webhook.nodes.feasibility import (
    KVM,
    Node,
    NodeSnapshot,
    Pod,
    decide,
    feasible_nodes,
    node_reason,
    pod_requests,
    quantity,
    requirement_matches,
    summarise,
    toleration_matches,
)
from webhook.options import NoKvmPolicy

TUN = f"{catalogue.RESOURCE_DOMAIN}/tun"
BOTH = {KVM: 1, TUN: 1}


def node(
    name: str = "n1",
    *,
    ready: str | None = "True",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    unschedulable: bool = False,
    allocatable: dict[str, Any] | None = None,
    capacity: dict[str, Any] | None = None,
) -> Node:
    devices = {KVM: "110", TUN: "110"}
    status: dict[str, Any] = {
        "allocatable": devices if allocatable is None else allocatable,
        "capacity": devices if capacity is None else capacity,
    }
    if ready is not None:
        status["conditions"] = [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": ready},
        ]
    spec: dict[str, Any] = {}
    if taints is not None:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
        "status": status,
    }


def pod(**spec: Any) -> Pod:
    labels = spec.pop("labels", {catalogue.LAUNCHER_LABEL_KEY: catalogue.LAUNCHER_LABEL_VALUE})
    spec.setdefault("containers", [{"name": "compute"}])
    return {"metadata": {"labels": labels}, "spec": spec}


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    requirement: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return requirement


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        (None, 0),
        ("", 0),
        ("1", 1),
        ("110", 110),
        (3, 3),
        ("1k", 1000),
        ("2Ki", 2048),
        ("1e3", 1000),
        ("500m", 0),
        ("1500m", 1),
        ("-1", 0),
        ("lots", 0),
        (True, 0),
    ],
)
def test_quantities_are_whole_device_counts(value: Any, expected: int) -> None:
    assert quantity(value) == expected


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "k", "operator": "Equal", "value": "v"}, {"key": "k", "value": "v"}, True),
        ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
        ({"key": "k", "value": "v"}, {"key": "k", "value": "w"}, False),
        ({"key": "k", "operator": "Exists"}, {"key": "k", "value": "anything"}, True),
        ({"key": "k", "operator": "Exists"}, {"key": "other"}, False),
        ({"operator": "Exists"}, {"key": "any", "effect": "NoExecute"}, True),
        ({"operator": "Equal"}, {"key": "any"}, False),
        (
            {"operator": "Exists", "effect": "NoSchedule"},
            {"key": "any", "effect": "NoExecute"},
            False,
        ),
        (
            {"key": "k", "operator": "Exists", "effect": ""},
            {"key": "k", "effect": "NoExecute"},
            True,
        ),
        (
            {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
            {"key": "k", "effect": "NoExecute"},
            True,
        ),
        ({"key": "k", "operator": "Gt", "value": "1"}, {"key": "k", "value": "1"}, False),
    ],
)
def test_toleration_matches_taint(
    toleration: dict[str, Any], taint: dict[str, Any], tolerated: bool
) -> None:
    assert toleration_matches(toleration, taint) is tolerated


@pytest.mark.parametrize(
    ("requirement", "labels", "matches"),
    [
        (expr("zone", "In", "a", "b"), {"zone": "b"}, True),
        (expr("zone", "In", "a"), {"zone": "b"}, False),
        (expr("zone", "In", "a"), {}, False),
        (expr("zone", "NotIn", "a"), {"zone": "b"}, True),
        (expr("zone", "NotIn", "a"), {}, True),
        (expr("zone", "NotIn", "a"), {"zone": "a"}, False),
        (expr("kvm", "Exists"), {"kvm": ""}, True),
        (expr("kvm", "Exists"), {}, False),
        (expr("kvm", "DoesNotExist"), {}, True),
        (expr("kvm", "DoesNotExist"), {"kvm": "true"}, False),
        (expr("cores", "Gt", "4"), {"cores": "8"}, True),
        (expr("cores", "Gt", "8"), {"cores": "8"}, False),
        (expr("cores", "Lt", "8"), {"cores": "4"}, True),
        (expr("cores", "Lt", "8"), {"cores": "many"}, False),
        (expr("cores", "Gt", "4"), {}, False),
        (expr("cores", "Gt", "4", "5"), {"cores": "8"}, False),
        (expr("cores", "Almost", "4"), {"cores": "4"}, False),
    ],
)
def test_node_selector_requirement(
    requirement: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert requirement_matches(requirement, labels) is matches


# (case, pod, node, reason or None when the node is feasible)
CASES: list[tuple[str, Pod, Node, str | None]] = [
    ("plain node", pod(), node(), None),
    ("NotReady", pod(), node(ready="False"), "NotReady"),
    ("Ready Unknown", pod(), node(ready="Unknown"), "NotReady"),
    ("no conditions yet", pod(), node(ready=None), "NotReady"),
    ("cordoned", pod(), node(unschedulable=True), "unschedulable"),
    (
        "cordoned but tolerated",
        pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]),
        node(unschedulable=True),
        None,
    ),
    ("nodeName elsewhere", pod(nodeName="n2"), node(), "nodeName"),
    ("nodeName here", pod(nodeName="n1"), node(), None),
    ("empty nodeSelector", pod(nodeSelector={}), node(), None),
    ("nodeSelector matches", pod(nodeSelector={"kvm": "yes"}), node(labels={"kvm": "yes"}), None),
    (
        "nodeSelector differs",
        pod(nodeSelector={"kvm": "yes"}),
        node(labels={"kvm": "no"}),
        "nodeSelector",
    ),
    ("nodeSelector label absent", pod(nodeSelector={"kvm": "yes"}), node(), "nodeSelector"),
    (
        "affinity In",
        pod(affinity=affinity({"matchExpressions": [expr("z", "In", "a")]})),
        node(labels={"z": "a"}),
        None,
    ),
    (
        "affinity terms are ORed",
        pod(
            affinity=affinity(
                {"matchExpressions": [expr("z", "In", "x")]},
                {"matchExpressions": [expr("z", "In", "a")]},
            )
        ),
        node(labels={"z": "a"}),
        None,
    ),
    (
        "affinity expressions are ANDed",
        pod(affinity=affinity({"matchExpressions": [expr("z", "In", "a"), expr("gpu", "Exists")]})),
        node(labels={"z": "a"}),
        "node affinity",
    ),
    ("affinity with an empty term", pod(affinity=affinity({})), node(), "node affinity"),
    ("affinity with no terms", pod(affinity=affinity()), node(), "node affinity"),
    ("affinity without required part", pod(affinity={"nodeAffinity": {}}), node(), None),
    (
        "matchFields on the name",
        pod(affinity=affinity({"matchFields": [expr("metadata.name", "In", "n1")]})),
        node(),
        None,
    ),
    (
        "matchFields on another name",
        pod(affinity=affinity({"matchFields": [expr("metadata.name", "NotIn", "n1")]})),
        node(),
        "node affinity",
    ),
    ("NoSchedule taint", pod(), node(taints=[{"key": "gpu", "effect": "NoSchedule"}]), "taint"),
    ("NoExecute taint", pod(), node(taints=[{"key": "gpu", "effect": "NoExecute"}]), "taint"),
    (
        "PreferNoSchedule does not filter",
        pod(),
        node(taints=[{"key": "gpu", "effect": "PreferNoSchedule"}]),
        None,
    ),
    (
        "NoExecute tolerated for a while",
        pod(
            tolerations=[
                {
                    "key": "gpu",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ]
        ),
        node(taints=[{"key": "gpu", "effect": "NoExecute"}]),
        None,
    ),
    (
        "tolerate-everything",
        pod(tolerations=[{"operator": "Exists"}]),
        node(taints=[{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"}]),
        None,
    ),
    (
        "one of two taints tolerated",
        pod(tolerations=[{"key": "a", "operator": "Exists"}]),
        node(taints=[{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"}]),
        "taint",
    ),
    ("kvm allocatable 0", pod(), node(allocatable={KVM: "0", TUN: "110"}), "kvm allocatable 0"),
    (
        "kvm capacity only",
        pod(),
        node(allocatable={TUN: "110"}, capacity={KVM: "110", TUN: "110"}),
        "kvm allocatable 0",
    ),
    ("no allocatable at all", pod(), node(allocatable={}, capacity={}), "no kvm"),
    ("tun missing", pod(), node(allocatable={KVM: "1"}, capacity={KVM: "1"}), "no tun"),
    ("NotReady wins over devices", pod(), node(ready="False", allocatable={}), "NotReady"),
]


@pytest.mark.parametrize(
    ("case", "the_pod", "the_node", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_node_is_ruled_out_for_the_first_failing_filter(
    case: str, the_pod: Pod, the_node: Node, reason: str | None
) -> None:
    assert node_reason(the_pod, the_node, BOTH) == reason


def test_a_pod_without_device_requests_fits_a_node_without_devices() -> None:
    assert node_reason(pod(), node(allocatable={}, capacity={}), {}) is None
    assert node_reason(pod(), node(allocatable={}, capacity={}), {KVM: 0}) is None


def test_feasible_nodes_names_each_node_once() -> None:
    nodes = [node("a"), node("b", ready="False"), node("c", allocatable={KVM: "0", TUN: "1"})]
    result = feasible_nodes(pod(), nodes, BOTH)
    assert result.feasible == ("a",)
    assert result.ruled_out == {"b": "NotReady", "c": "kvm allocatable 0"}
    assert summarise(result.counts()) == "1 NotReady, 1 kvm allocatable 0"


def test_summary_keeps_the_commonest_reasons() -> None:
    from collections import Counter

    counts = Counter({"NotReady": 1, "taint": 5, "no kvm": 3, "nodeSelector": 2, "x": 1})
    assert summarise(counts) == "5 taint, 3 no kvm, 2 nodeSelector, 2 other"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": [{"resources": {"limits": {KVM: "1"}}}]}, 1),
        ({"containers": [{"resources": {"requests": {KVM: "2"}, "limits": {KVM: "2"}}}]}, 2),
        (
            {
                "containers": [
                    {"resources": {"limits": {KVM: "1"}}},
                    {"resources": {"limits": {KVM: "1"}}},
                ]
            },
            2,
        ),
        ({"containers": [{}], "initContainers": [{"resources": {"limits": {KVM: "3"}}}]}, 3),
        (
            {
                "containers": [{"resources": {"limits": {KVM: "1"}}}],
                "initContainers": [
                    {"restartPolicy": "Always", "resources": {"limits": {KVM: "1"}}}
                ],
            },
            2,
        ),
        ({"containers": [{"resources": {"limits": {KVM: "0"}}}]}, 0),
        ({"containers": [{"name": "compute"}]}, 0),
    ],
)
def test_pod_requests_follow_the_scheduler_rule(spec: dict[str, Any], expected: int) -> None:
    assert pod_requests({"spec": spec}, [KVM]) == {KVM: expected}


NO_KVM = {KVM: "0", TUN: "110"}


@pytest.mark.parametrize(
    ("policy", "outcome", "emulate", "denied"),
    [
        ("warn", "warned", False, False),
        ("emulate", "emulated", True, False),
        ("deny", "denied", False, True),
    ],
)
def test_no_kvm_policy_applies_when_kvm_is_what_is_missing(
    policy: str, outcome: str, emulate: bool, denied: bool
) -> None:
    nodes = [node("a", allocatable=NO_KVM), node("b", allocatable=NO_KVM), node("c", ready="False")]
    decision = decide(pod(), nodes, requests=BOTH, no_kvm_policy=policy)
    assert decision.outcome == outcome
    assert decision.emulate is emulate
    assert (decision.deny_message is not None) is denied
    if denied:
        assert decision.deny_message is not None
        assert "3 nodes ruled out (2 kvm allocatable 0, 1 NotReady)" in decision.deny_message
        assert "--no-kvm-policy=emulate" in decision.deny_message
    else:
        assert decision.warning is not None and len(decision.warning) <= 120
        assert KVM in decision.warning and "2 kvm allocatable 0" in decision.warning
    assert decision.feasible == (2 if emulate else 0)


def test_a_feasible_node_means_no_warning_whatever_the_policy() -> None:
    nodes = [node("a", allocatable=NO_KVM), node("b")]
    for policy in ("warn", "emulate", "deny"):
        decision = decide(pod(), nodes, requests=BOTH, no_kvm_policy=policy)
        assert (decision.outcome, decision.warning, decision.feasible) == ("feasible", None, 1)


def test_a_migration_target_is_never_emulated_or_denied() -> None:
    target = pod(labels={"kubevirt.io": "virt-launcher", catalogue.MIGRATION_JOB_LABEL: "uid-1"})
    for policy in ("emulate", "deny"):
        decision = decide(target, [node(allocatable=NO_KVM)], requests=BOTH, no_kvm_policy=policy)
        assert decision.outcome == "migration"
        assert not decision.emulate and decision.deny_message is None
        assert decision.warning is not None


def test_when_no_node_passes_the_other_filters_the_pod_is_only_warned() -> None:
    nodes = [node("a", ready="False", allocatable={}), node("b", unschedulable=True)]
    decision = decide(pod(), nodes, requests=BOTH, no_kvm_policy="deny")
    assert decision.outcome == "warned"
    assert (
        decision.warning
        == "no node can take this pod: 2 nodes ruled out (1 NotReady, 1 unschedulable)"
    )


def test_no_nodes_at_all_is_a_warning_not_a_denial() -> None:
    decision = decide(pod(), [], requests=BOTH, no_kvm_policy="deny")
    assert decision.outcome == "warned"
    assert decision.warning == "no node can take this pod: no nodes known"


def test_missing_tun_is_warned_about_but_not_under_the_kvm_policy() -> None:
    nodes = [node(allocatable={KVM: "110"}, capacity={KVM: "110"})]
    decision = decide(pod(), nodes, requests=BOTH, no_kvm_policy="deny")
    assert decision.outcome == "warned"
    assert decision.warning is not None and decision.warning.startswith(
        f"no schedulable node has {TUN}"
    )


def test_emulate_cannot_take_away_kvm_the_pod_requests_itself() -> None:
    nodes = [node(allocatable=NO_KVM)]
    decision = decide(pod(), nodes, requests=BOTH, no_kvm_policy="emulate", kvm_injected=False)
    assert decision.outcome == "warned" and not decision.emulate


def test_an_unknown_policy_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no-kvm policy"):
        decide(pod(), [], requests=BOTH, no_kvm_policy="maybe")


# --- through mutate_review: the pure admission path with a snapshot of nodes ------------------


def review(name: str, **labels: str) -> Any:
    from tests.webhook.conftest import load_fixture
    from webhook.serving.review import parse

    document = load_fixture(name)
    document["request"]["object"]["metadata"]["labels"].update(labels)
    return parse(json.dumps(document).encode())


def test_mutate_review_without_nodes_is_unchanged() -> None:
    from webhook.admission import mutate_review, mutate_review_decided
    from webhook.rules.policy import LauncherPolicy

    request = review("v1-launcher-2018-privileged.json")
    answer, decision = mutate_review_decided(request, LauncherPolicy())
    assert decision is None
    assert answer == mutate_review(request, LauncherPolicy())


#: virt-handler labels the nodes it runs on; every launcher selects them (KubeVirt v0.6 too).
SCHEDULABLE = {"kubevirt.io/schedulable": "true"}
KVM_LESS = NodeSnapshot(
    nodes=(node("a", labels=SCHEDULABLE, allocatable=NO_KVM, capacity=NO_KVM),), synced=True
)


@pytest.mark.parametrize(
    ("name", "labels", "policy", "outcome", "allowed", "kvm_patched"),
    [
        ("v1-launcher-2018-privileged.json", {}, "deny", "denied", False, False),
        ("v1-launcher-2018-privileged.json", {}, "emulate", "emulated", True, False),
        ("v1-launcher-2018-privileged.json", {}, "warn", "warned", True, True),
        (
            "v1-launcher-2018-privileged.json",
            {catalogue.MIGRATION_JOB_LABEL: "job-1"},
            "deny",
            "migration",
            True,
            True,
        ),
        ("v1-launcher-emulation.json", {}, "deny", "feasible", True, False),
        ("v1-launcher-current-nonroot.json", {}, "emulate", "warned", True, False),
    ],
)
def test_mutate_review_follows_the_decision(
    name: str,
    labels: dict[str, str],
    policy: NoKvmPolicy,
    outcome: str,
    allowed: bool,
    kvm_patched: bool,
) -> None:
    from webhook.admission import mutate_review_decided
    from webhook.rules.policy import LauncherPolicy

    request = review(name, **labels)
    answer, decision = mutate_review_decided(
        request, LauncherPolicy(), nodes=KVM_LESS, no_kvm_policy=policy
    )
    assert decision is not None and decision.outcome == outcome
    assert answer.allowed is allowed
    assert (
        any(KVM.replace("/", "~1") in op["path"] or KVM in str(op["value"]) for op in answer.patch)
        is kvm_patched
    )
    if not allowed:
        assert answer.status_code == 403 and "kvm" in answer.message
        assert answer.patch == []
    if outcome != "feasible":
        assert answer.audit_annotations["scheduling"] == outcome


def test_an_unsynced_view_patches_as_usual() -> None:
    from webhook.admission import mutate_review, mutate_review_decided
    from webhook.rules.policy import LauncherPolicy

    request = review("v1-launcher-2018-privileged.json")
    answer, decision = mutate_review_decided(
        request, LauncherPolicy(), nodes=NodeSnapshot(), no_kvm_policy="deny"
    )
    assert decision is not None and decision.outcome == "unsynced"
    usual = mutate_review(request, LauncherPolicy())
    assert (answer.allowed, answer.patch, answer.warnings) == (True, usual.patch, usual.warnings)
    assert answer.audit_annotations["scheduling"] == "unsynced"


def test_warnings_drop_reasons_rather_than_get_cut() -> None:
    nodes = [
        node("a", allocatable=NO_KVM),
        node("b", ready="False"),
        node("c", unschedulable=True),
        node("d", taints=[{"key": "x", "effect": "NoSchedule"}]),
        node("e", allocatable={TUN: "1"}, capacity={TUN: "1"}),
    ]
    for policy in ("warn", "emulate"):
        decision = decide(pod(), nodes, requests=BOTH, no_kvm_policy=policy)
        assert decision.warning is not None
        assert len(decision.warning) <= 120 and not decision.warning.endswith("…")
        assert "5 nodes ruled out (" in decision.warning


def reference_pod_requests(pod_: Pod, resources: list[str]) -> dict[str, int]:
    """The scheduler's rule written resource by resource, as plainly as it reads."""

    def request(container: dict[str, Any], resource: str) -> int:
        section = container.get("resources") or {}
        if resource in (section.get("requests") or {}):
            return quantity(section["requests"][resource])
        return quantity((section.get("limits") or {}).get(resource))

    spec = pod_["spec"]
    totals = {}
    for resource in resources:
        regular = sum(request(c, resource) for c in spec.get("containers") or () if c)
        sidecars = peak = 0
        for init in spec.get("initContainers") or ():
            amount = request(init, resource)
            if init.get("restartPolicy") == "Always":
                sidecars += amount
                peak = max(peak, sidecars)
            else:
                peak = max(peak, sidecars + amount)
        totals[resource] = max(regular + sidecars, peak)
    return totals


def _containers() -> Any:
    from hypothesis import strategies as st

    amounts = st.dictionaries(st.sampled_from([KVM, TUN, "cpu"]), st.sampled_from(["0", "1", "2"]))
    container = st.builds(
        lambda requests, limits, always: {
            "resources": {"requests": requests, "limits": limits},
            **({"restartPolicy": "Always"} if always else {}),
        },
        amounts,
        amounts,
        st.booleans(),
    )
    return st.lists(container, max_size=3)


def test_pod_requests_in_one_pass_follow_the_rule_resource_by_resource() -> None:
    from hypothesis import given, settings

    @settings(max_examples=300, deadline=None)
    @given(_containers(), _containers())
    def check(containers: list[dict[str, Any]], inits: list[dict[str, Any]]) -> None:
        the_pod = {"spec": {"containers": containers, "initContainers": inits}}
        assert pod_requests(the_pod, [KVM, TUN]) == reference_pod_requests(the_pod, [KVM, TUN])

    check()
