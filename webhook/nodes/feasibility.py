"""Which nodes could run a launcher pod, judged as the scheduler's filters would, and what to do.

Pure: Node and Pod dicts in the API's own JSON shape in, verdicts out; no client, no clock. The
filters are the ones the scheduler applies to the fields a launcher pod uses — node Ready and
schedulable (NodeUnschedulable), `spec.nodeName`, `nodeSelector` and required node affinity
(NodeAffinity), taints against tolerations (TaintToleration: NoSchedule and NoExecute filter,
PreferNoSchedule does not), and allocatable of each device (NodeResourcesFit, without what
running pods already hold: the webhook may only read nodes). Each ruled-out node gets the first
reason found, in that order, so a summary counts every node once.

`decide` turns the result into what /mutate does when no feasible node has kvm, under
`--no-kvm-policy`: `warn` (inject anyway), `emulate` (inject tun, not kvm) or `deny`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

import orjson

from virtdev import catalogue
from webhook.rules.answer import MAX_WARNING, fit_warning

Node = dict[str, Any]
Pod = dict[str, Any]

NO_KVM_POLICIES = ("warn", "emulate", "deny")
DEFAULT_NO_KVM_POLICY = "warn"
FILTERED_EFFECTS = ("NoSchedule", "NoExecute")
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
#: The taint a cordoned node carries, as a toleration matches it.
CORDON_TAINT = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
KVM = f"{catalogue.RESOURCE_DOMAIN}/{catalogue.ACCELERATOR}"

_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?$"
)
_SUFFIXES = {
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity(value: Any) -> int:
    """A whole count from a resource quantity: `"2"`, `2`, `"1k"`; missing or invalid is 0.

    Extended resources are whole numbers; a fraction (`"500m"`) rounds down, as no device can
    be split. Negative values count as 0.
    """
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return 0
    number, exponent, suffix = match.group(1, 2, 3)
    try:
        amount = Decimal(number)
    except InvalidOperation:
        return 0
    if exponent:
        amount = amount.scaleb(int(exponent[1:]))
    elif suffix == "m":
        amount = amount / 1000
    elif suffix:
        amount = amount * _SUFFIXES[suffix]
    if not amount.is_finite() or amount <= 0:
        return 0
    return math.floor(amount)


def short_name(resource: str) -> str:
    """`devices.kubevirt.io/kvm` → `kvm`: what the summaries print."""
    return resource.rpartition("/")[2]


# --- nodes ------------------------------------------------------------------------------------

_DEVICE_PREFIX = catalogue.RESOURCE_DOMAIN + "/"


def node_name(node: Node) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


def node_labels(node: Node) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("labels") or {}


def is_ready(node: Node) -> bool:
    """The Ready condition is True; a node with no conditions yet is not Ready."""
    for condition in (node.get("status") or {}).get("conditions") or ():
        if (condition or {}).get("type") == "Ready":
            return (condition or {}).get("status") == "True"
    return False


def is_unschedulable(node: Node) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def taints(node: Node) -> list[dict[str, Any]]:
    return [t for t in (node.get("spec") or {}).get("taints") or () if t]


def allocatable(node: Node, resource: str) -> int:
    return quantity(((node.get("status") or {}).get("allocatable") or {}).get(resource))


def capacity(node: Node, resource: str) -> int:
    return quantity(((node.get("status") or {}).get("capacity") or {}).get(resource))


def device_resources(node: Node) -> dict[str, dict[str, str]]:
    """The node's `devices.kubevirt.io/*` entries of capacity and allocatable, as advertised."""
    status = node.get("status") or {}
    found: dict[str, dict[str, str]] = {}
    for section in ("capacity", "allocatable"):
        for resource, value in (status.get(section) or {}).items():
            if resource.startswith(_DEVICE_PREFIX):
                found.setdefault(resource, {})[section] = str(value)
    return found


# --- pods -------------------------------------------------------------------------------------


def _spec(pod: Pod) -> dict[str, Any]:
    return pod.get("spec") or {}


def is_migration_target(pod: Pod) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return catalogue.MIGRATION_JOB_LABEL in labels


def launcher_question(pod: Pod, injected: Sequence[str], no_kvm_policy: str) -> bytes | None:
    """Everything a launcher's scheduling decision reads, as it arrived, in one key.

    The pod's placement fields and its containers' resources, raw, with the resources /mutate
    will inject (in the policy's order) and the no-kvm policy: two launchers that agree on it get
    the same decision. It is written before the placement fields' shape check and the request
    arithmetic, so that the second launcher of a VM pool skips both (its bytes equal those of a
    pod that passed). Maps keep their order: a pod that spells the same in another order is
    only decided again. The key is a digest of those bytes (`question_key`), so a remembered
    decision costs the same whatever the pod carries. None when orjson cannot write it (an
    integer beyond 64 bits, nesting past 255) or it is over `MAX_QUESTION_BYTES`: not
    remembered. The pod has passed `shapes.POD_SPEC`: containers are objects.
    """
    spec = _spec(pod)
    affinity = spec.get("affinity")
    inits = spec.get("initContainers")
    try:
        raw = orjson.dumps(
            (
                spec.get("nodeName"),
                spec.get("nodeSelector"),
                affinity.get("nodeAffinity") if type(affinity) is dict else affinity,
                spec.get("tolerations"),
                is_migration_target(pod),
                [c.get("resources") for c in spec.get("containers") or ()],
                [(c.get("resources"), c.get("restartPolicy")) for c in inits] if inits else None,
                injected,
                no_kvm_policy,
            )
        )
    except orjson.JSONEncodeError:
        return None
    key = question_key(raw)
    return _LAUNCHER_TAG + key if key is not None else None


#: Starts every `launcher_question`, so that it never equals a key the index writes itself.
_LAUNCHER_TAG = b"launcher:"
#: Questions longer than this are not remembered (decided each time). A real launcher's
#: placement fields and resources take 0.2-3 KiB (a host-model CPU's feature labels in the node
#: selector are the most); hashing a hostile 6 MiB one would cost ~6 ms for nothing.
MAX_QUESTION_BYTES = 64 * 1024
#: Questions up to this long are their own key: 256 of them hold at most 1 MiB, and hashing
#: one would cost more than all else a remembered decision does (blake2b: ~10,000
#: instructions for a 200-byte question, bench/webhook_instructions.py's method).
RAW_KEY_BYTES = 4 * 1024


def question_key(raw: bytes) -> bytes | None:
    """A remembered decision's key: the question itself up to `RAW_KEY_BYTES`, else `#` and 16
    bytes of BLAKE2b of it (JSON starts with `[`: the two never meet), or None past
    `MAX_QUESTION_BYTES`. A pod's placement fields may be megabytes; the index keeps 256 keys.
    128 bits: no two questions share a key by chance, nor by search (2^64 tries to find a pair)."""
    if len(raw) <= RAW_KEY_BYTES:
        return raw
    if len(raw) > MAX_QUESTION_BYTES:
        return None
    return b"#" + hashlib.blake2b(raw, digest_size=16).digest()


def _container_requests(container: dict[str, Any], resources: tuple[str, ...]) -> dict[str, int]:
    """What one container requests of each resource (absent: not in the result)."""
    section = container.get("resources")
    if not section:
        return {}
    requests = section.get("requests") or {}
    limits = section.get("limits") or {}
    found: dict[str, int] = {}
    for resource in resources:
        if resource in requests:
            found[resource] = quantity(requests[resource])
        elif resource in limits:
            # The API server copies extended-resource limits into requests when absent there.
            found[resource] = quantity(limits[resource])
    return found


def pod_requests(pod: Pod, resources: Iterable[str]) -> dict[str, int]:
    """What the pod requests of each resource, by the scheduler's rule.

    Containers add up; an init container runs alone (after the sidecars started before it), so
    the pod needs the larger of the sum and the largest init step; native sidecars
    (`restartPolicy: Always` init containers) keep running and add to both. One pass over the
    containers for all the resources: this runs on every launcher admission.
    """
    wanted = tuple(resources)
    spec = _spec(pod)
    regular = dict.fromkeys(wanted, 0)
    for container in spec.get("containers") or ():
        if container:
            for resource, amount in _container_requests(container, wanted).items():
                regular[resource] += amount
    inits = spec.get("initContainers")
    if not inits:
        return regular
    sidecars = dict.fromkeys(wanted, 0)
    init_peak = dict.fromkeys(wanted, 0)
    for init in inits:
        if not init:
            continue
        amounts = _container_requests(init, wanted)
        always = init.get("restartPolicy") == "Always"
        for resource in wanted:
            amount = amounts.get(resource, 0)
            if always:
                sidecars[resource] += amount
                init_peak[resource] = max(init_peak[resource], sidecars[resource])
            else:
                init_peak[resource] = max(init_peak[resource], sidecars[resource] + amount)
    return {r: max(regular[r] + sidecars[r], init_peak[r]) for r in wanted}


def requested_device_resources(pod: Pod) -> set[str]:
    """Every `devices.kubevirt.io/*` name any container of the pod requests or limits."""
    names: set[str] = set()
    spec = _spec(pod)
    for list_field in ("containers", "initContainers"):
        for container in spec.get(list_field) or ():
            section = container.get("resources") if container else None
            if not section:
                continue
            for amounts in (section.get("limits"), section.get("requests")):
                for name in amounts or ():
                    if name.startswith(_DEVICE_PREFIX):
                        names.add(name)
    return names


# --- filters ----------------------------------------------------------------------------------


def toleration_matches(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' ToleratesTaint: effect (empty = all), key (empty with Exists = all), value."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taint(
    node_taints: Iterable[Mapping[str, Any]], tolerations: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The first NoSchedule/NoExecute taint no toleration matches (tolerationSeconds only
    limits how long a NoExecute toleration lasts once running: it does not filter)."""
    for taint in node_taints:
        if taint.get("effect") not in FILTERED_EFFECTS:
            continue
        if not any(toleration_matches(t, taint) for t in tolerations):
            return taint
    return None


def _integer(text: Any) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None


def requirement_matches(requirement: Mapping[str, Any], values_by_key: Mapping[str, str]) -> bool:
    """One NodeSelectorRequirement against labels (or fields) of a node."""
    key = requirement.get("key") or ""
    operator = requirement.get("operator")
    values = [str(v) for v in requirement.get("values") or ()]
    present = key in values_by_key
    value = values_by_key.get(key)
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        have, bound = _integer(value), _integer(values[0])
        if have is None or bound is None:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False  # an unknown operator matches nothing, as the API server would reject it


def term_matches(term: Mapping[str, Any], node: Node) -> bool:
    """A NodeSelectorTerm: its expressions and fields are ANDed; an empty term matches nothing."""
    expressions = term.get("matchExpressions") or ()
    fields = term.get("matchFields") or ()
    if not expressions and not fields:
        return False
    labels = node_labels(node)
    node_fields = {"metadata.name": node_name(node)}
    return all(requirement_matches(r, labels) for r in expressions) and all(
        requirement_matches(r, node_fields) for r in fields
    )


def required_affinity_matches(pod: Pod, node: Node) -> bool:
    """requiredDuringSchedulingIgnoredDuringExecution: its nodeSelectorTerms are ORed."""
    affinity = (_spec(pod).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    return any(term_matches(term or {}, node) for term in required.get("nodeSelectorTerms") or ())


def node_selector_matches(pod: Pod, node: Node) -> bool:
    """`nodeSelector`: every pair must equal a label; an empty selector matches every node."""
    labels = node_labels(node)
    return all(labels.get(k) == v for k, v in (_spec(pod).get("nodeSelector") or {}).items())


def placement_reason(pod: Pod, node: Node) -> str | None:
    """Why the node cannot take the pod whatever it advertises, or None."""
    spec = _spec(pod)
    tolerations = [t for t in spec.get("tolerations") or () if t]
    if not is_ready(node):
        return "NotReady"
    if is_unschedulable(node):
        if not any(toleration_matches(t, CORDON_TAINT) for t in tolerations):
            return "unschedulable"
    wanted = spec.get("nodeName")
    if wanted and wanted != node_name(node):
        return "nodeName"
    if not node_selector_matches(pod, node):
        return "nodeSelector"
    if not required_affinity_matches(pod, node):
        return "node affinity"
    if untolerated_taint(taints(node), tolerations) is not None:
        return "taint"
    return None


def resource_reason(node: Node, requests: Mapping[str, int]) -> str | None:
    """The first device the node cannot give: `kvm missing` or `kvm allocatable 0`."""
    for resource, amount in requests.items():
        if amount <= 0:
            continue
        have = allocatable(node, resource)
        if have >= amount:
            continue
        advertised = resource in ((node.get("status") or {}).get("allocatable") or {}) or (
            resource in ((node.get("status") or {}).get("capacity") or {})
        )
        name = short_name(resource)
        return f"{name} allocatable {have}" if advertised else f"no {name}"
    return None


def node_reason(pod: Pod, node: Node, requests: Mapping[str, int]) -> str | None:
    return placement_reason(pod, node) or resource_reason(node, requests)


@dataclass(frozen=True, slots=True)
class Feasibility:
    feasible: tuple[str, ...]
    #: node name → the first reason it was ruled out for
    ruled_out: Mapping[str, str]

    def counts(self) -> Counter[str]:
        return Counter(self.ruled_out.values())


def feasible_nodes(pod: Pod, nodes: Iterable[Node], requests: Mapping[str, int]) -> Feasibility:
    feasible: list[str] = []
    ruled_out: dict[str, str] = {}
    for node in nodes:
        reason = node_reason(pod, node, requests)
        if reason is None:
            feasible.append(node_name(node))
        else:
            ruled_out[node_name(node)] = reason
    return Feasibility(tuple(feasible), ruled_out)


def summarise(counts: Counter[str], *, limit: int = 3) -> str:
    """`2 kvm allocatable 0, 1 NotReady`: the commonest reasons first."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    parts = [f"{n} {reason}" for reason, n in ordered[:limit]]
    rest = sum(n for _, n in ordered[limit:])
    if rest:
        parts.append(f"{rest} other")
    return ", ".join(parts)


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


# --- the decision -----------------------------------------------------------------------------


#: What the scheduling decision concluded (the label of virtdev_webhook_scheduling_decisions_total).
Outcome = Literal["feasible", "warned", "emulated", "denied", "migration", "unsynced"]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    emulate: bool = False
    deny_message: str | None = None
    warning: str | None = None
    feasible: int = 0
    ruled_out: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fit:
    """What the nodes say of one pod, however it was worked out: node by node (`decide`, the
    reference) or from the index of the live view (`webhook.nodes.index`), which must agree."""

    #: Nodes that pass every filter, devices included.
    feasible: int
    #: The first reason each ruled-out node failed, counted.
    ruled_out: Counter[str]
    #: Some node passes every filter but the devices' (only worked out when none is feasible).
    placeable: bool = False
    #: kvm is requested and no placeable node has enough of it.
    kvm_short: bool = False
    #: The first requested device no placeable node has enough of (None when none is placeable).
    missing: str | None = None


class NodeDecider(Protocol):
    """What answers `decide` for a snapshot: `webhook.nodes.index.NodeIndex` in the live view."""

    def decide(
        self,
        pod: Pod,
        *,
        requests: Mapping[str, int],
        no_kvm_policy: str = DEFAULT_NO_KVM_POLICY,
        kvm_injected: bool = True,
        question: bytes | None = None,
    ) -> Decision: ...

    def remembered(self, question: bytes) -> Decision | None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """What the webhook knows of the nodes, and the decision against them.

    Built from `nodes` (tests, tools), it decides node by node; the live view
    (`webhook.nodes.view`) leaves `nodes` empty and sets `index`, which answers the same at a cost
    that does not grow with the number of nodes.
    """

    nodes: tuple[Node, ...] = ()
    synced: bool = False
    resource_version: str = ""
    index: NodeDecider | None = None

    def decide(
        self,
        pod: Pod,
        *,
        requests: Mapping[str, int],
        no_kvm_policy: str = DEFAULT_NO_KVM_POLICY,
        kvm_injected: bool = True,
        question: bytes | None = None,
    ) -> Decision:
        """The decision; `question` (a `launcher_question`) remembers it in the index."""
        if self.index is not None:
            return self.index.decide(
                pod,
                requests=requests,
                no_kvm_policy=no_kvm_policy,
                kvm_injected=kvm_injected,
                question=question,
            )
        return decide(
            pod,
            self.nodes,
            requests=requests,
            no_kvm_policy=no_kvm_policy,
            kvm_injected=kvm_injected,
        )

    def remembered(self, question: bytes) -> Decision | None:
        """The decision the index took for `question` since its last fact change, if any."""
        return self.index.remembered(question) if self.index is not None else None


def without_kvm(requests: Mapping[str, int]) -> dict[str, int]:
    """The requests but kvm: what an emulated launcher (tun, no kvm) asks of a node."""
    return {r: n for r, n in requests.items() if r != KVM}


def check_policy(no_kvm_policy: str) -> None:
    if no_kvm_policy not in NO_KVM_POLICIES:
        raise ValueError(f"no-kvm policy {no_kvm_policy!r} is not one of {NO_KVM_POLICIES}")


def decide(
    pod: Pod,
    nodes: Sequence[Node],
    *,
    requests: Mapping[str, int],
    no_kvm_policy: str = DEFAULT_NO_KVM_POLICY,
    kvm_injected: bool = True,
) -> Decision:
    """What /mutate does given the nodes: inject as usual, warn, withhold kvm, or deny.

    Node by node: the reference the live view's index is checked against (see `verdict`).
    """
    check_policy(no_kvm_policy)
    result = feasible_nodes(pod, nodes, requests)
    fit = Fit(len(result.feasible), result.counts())
    if not result.feasible:
        placeable = [node for node in nodes if placement_reason(pod, node) is None]
        kvm_short = (
            requests.get(KVM, 0) > 0
            and bool(placeable)
            and not any(allocatable(node, KVM) >= requests[KVM] for node in placeable)
        )
        missing = KVM if kvm_short else _first_missing(placeable, requests)
        fit = Fit(0, fit.ruled_out, bool(placeable), kvm_short, missing)
    return verdict(
        fit,
        pod,
        no_kvm_policy=no_kvm_policy,
        kvm_injected=kvm_injected,
        emulated=lambda: len(feasible_nodes(pod, nodes, without_kvm(requests)).feasible),
    )


def verdict(
    fit: Fit,
    pod: Pod,
    *,
    no_kvm_policy: str,
    kvm_injected: bool,
    emulated: Callable[[], int],
) -> Decision:
    """The decision from what the nodes say: inject as usual, warn, withhold kvm, or deny.

    `kvm_injected` says whether kvm is among the requests because virtdev adds it (only then
    can `emulate` leave it out). The policy applies only when kvm is what is missing: some node
    passes every other filter but none has kvm. When no node passes the other filters either,
    the pod would wait Pending whatever we do: warn, never deny. A migration target is never
    changed or denied. `emulated` counts the nodes feasible without kvm (asked only then).
    """
    counts = fit.ruled_out
    if fit.feasible:
        return Decision("feasible", feasible=fit.feasible, ruled_out=dict(counts))
    kvm_missing, missing = fit.kvm_short, fit.missing
    subject = f"no schedulable node has {missing}" if missing else "no node can take this pod"
    ruled_out = dict(counts)
    if not kvm_missing or no_kvm_policy == "warn" or is_migration_target(pod):
        outcome: Outcome = "migration" if kvm_missing and is_migration_target(pod) else "warned"
        return Decision(outcome, warning=_warning(subject, counts), ruled_out=ruled_out)
    if no_kvm_policy == "deny":
        message = (
            f"no schedulable node advertises {KVM}: {_why(counts, limit=5)}; install virtdev's "
            "agent on nodes with /dev/kvm, or run the webhook with --no-kvm-policy=emulate"
        )
        return Decision("denied", deny_message=message, ruled_out=ruled_out)
    if not kvm_injected:  # emulate, but the pod asks for kvm itself: not ours to take away
        warning = _warning(f"{subject} (pod requests it)", counts)
        return Decision("warned", warning=warning, ruled_out=ruled_out)
    return Decision(
        "emulated",
        emulate=True,
        warning=_warning(f"{subject}; emulated", counts),
        feasible=emulated(),
        ruled_out=ruled_out,
    )


def _why(counts: Counter[str], *, limit: int = 3) -> str:
    total = sum(counts.values())
    return (
        f"{_nodes(total)} ruled out ({summarise(counts, limit=limit)})"
        if total
        else "no nodes known"
    )


def _warning(subject: str, counts: Counter[str]) -> str:
    """`subject: N nodes ruled out (reasons)` within 120 characters: fewer reasons if need be."""
    for limit in (3, 2, 1):
        text = f"{subject}: {_why(counts, limit=limit)}"
        if len(text) <= MAX_WARNING:
            return text
    return fit_warning(text)


def _first_missing(nodes: Sequence[Node], requests: Mapping[str, int]) -> str | None:
    """The first requested device none of `nodes` has enough of (None when no node is placeable)."""
    if not nodes:
        return None
    for resource, amount in requests.items():
        if amount > 0 and not any(allocatable(node, resource) >= amount for node in nodes):
            return resource
    return None
