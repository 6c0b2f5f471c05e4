"""The nodes indexed by what the scheduler's filters read: an admission costs about the same at
5,000 nodes as at 5.

`webhook.nodes.feasibility.decide` walks every node (~10 µs each: 58 ms at 5,000 nodes, on the event
loop). Here every fact a filter reads — Ready, cordoned, each label key and each key=value, each
NoSchedule/NoExecute taint, each device's allocatable amount — has the set of nodes that have
it, as a Python int with one bit per node (its slot). A pod's filters become a few dozen `&`,
`|` and `~` over those ints, in the filters' own order, and each reason's count is a popcount
of the nodes it rules out first: the decision and its "N nodes ruled out (reasons)" summary are
exactly the per-node ones (a property test checks it), at a cost set by the distinct taints,
named label values and device amounts, not by the nodes (the ints grow by a machine word per 64
nodes: 240 bytes at 15,000, copied at memory speed).

Updates are incremental: a node's facts are compared with the stored ones and only the changed
facts move its bit, so a heartbeat that changes nothing the filters read costs a comparison.
Slots freed by deleted nodes are reused first, so the ints stay as wide as the node count. A
fact shared by fewer than `dense` nodes (a hostname label's value) keeps only its slots and
becomes an int when a pod asks for it: memory stays linear in the nodes.

Only what the filters read is kept of a node (`NodeFacts`); label strings are shared between
the nodes that carry them. One lock: the view's thread updates, admissions read, each holding it
for microseconds, so a decision never sees half an update.

Decisions are remembered until a fact changes (`ANSWERS` of them, keyed by exactly what they
read of the pod): the launcher pods of one VM pool ask the same question, and at 100 node
updates a second most updates are heartbeats that change no fact. Admission keys them by the
pod as it arrived (`feasibility.launcher_question`) and asks `remembered` first, so a pool's
second launcher skips the shape check and request arithmetic too. Memory stays bounded in
bytes whatever pods arrive: a key is the question itself up to 4 KiB, else a 16-byte digest
of it (`question_key`; one over 64 KiB is not remembered), and the keys and texts of the
remembered decisions (reasons that may name a pod's resources, messages) are held to
`ANSWER_BYTES`; both limits forget all at once.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from webhook.nodes.feasibility import (
    _DEVICE_PREFIX,
    CORDON_TAINT,
    DEFAULT_NO_KVM_POLICY,
    FILTERED_EFFECTS,
    KVM,
    Decision,
    Fit,
    Node,
    Pod,
    _integer,
    check_policy,
    is_migration_target,
    is_ready,
    is_unschedulable,
    node_labels,
    node_name,
    quantity,
    question_key,
    short_name,
    taints,
    toleration_matches,
    verdict,
    without_kvm,
)

#: A fact held by this many nodes keeps its int up to date; rarer ones build it when asked.
DENSE = 32
#: Decisions remembered between two fact changes (all forgotten when full: no LRU to keep).
ANSWERS = 256
#: ... and characters of their texts (`_weight`), so that they stay bounded in bytes too.
ANSWER_BYTES = 1024 * 1024
#: What one remembered decision holds besides its texts and its key: the dict's entry, the
#: Decision and its ruled_out dict (measured with sys.getsizeof: ~420).
ENTRY_BYTES = 512

Taint = tuple[str, str, str]  # key, value, effect


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the filters read of one Node, nothing else."""

    name: str
    labels: tuple[tuple[str, str], ...]
    ready: bool
    unschedulable: bool
    #: NoSchedule and NoExecute taints only (PreferNoSchedule does not filter), each once.
    taints: tuple[Taint, ...]
    #: (resource, allocatable) of each devices.kubevirt.io/* resource the node advertises (in
    #: capacity or allocatable): what `resource_reason` reads.
    devices: tuple[tuple[str, int], ...]


def facts_of(node: Node) -> NodeFacts:
    """A Node in the API's JSON shape, reduced to what the filters read."""
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    advertised = {
        resource
        for section in (allocatable, status.get("capacity") or {})
        for resource in section
        if isinstance(resource, str) and resource.startswith(_DEVICE_PREFIX)
    }
    filtered = {
        (str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect")))
        for t in taints(node)
        if t.get("effect") in FILTERED_EFFECTS
    }
    return NodeFacts(
        name=node_name(node),
        labels=tuple(sorted(node_labels(node).items())),
        ready=is_ready(node),
        unschedulable=is_unschedulable(node),
        taints=tuple(sorted(filtered)),
        devices=tuple(sorted((r, quantity(allocatable.get(r))) for r in advertised)),
    )


def _mask_of(slots: Iterable[int]) -> int:
    """The int with these bits set, built in one pass (not one big-int per slot)."""
    listed = list(slots)
    if not listed:
        return 0
    if len(listed) == 1:
        return 1 << listed[0]
    buffer = bytearray((max(listed) >> 3) + 1)
    for slot in listed:
        buffer[slot >> 3] |= 1 << (slot & 7)
    return int.from_bytes(buffer, "little")


class Members:
    """The nodes that have one fact: a list of their slots while few have it, an int (one bit
    per slot) once `dense` do. Never both: a set of 5,000 slots would cost 400 KB, the int 640
    bytes."""

    __slots__ = ("_dense", "_mask", "_slots", "count", "pair", "text")

    def __init__(
        self, text: str = "", dense: int = DENSE, pair: tuple[str, str] = ("", "")
    ) -> None:
        self.text = text  # the label key or value: one copy for all the nodes that carry it
        self.pair = pair  # (key, value) of a label value: one tuple for all its nodes' facts
        self.count = 0
        self._dense = dense
        self._slots: list[int] | None = []
        self._mask = 0

    def add(self, slot: int) -> None:
        if self._slots is not None:
            if slot in self._slots:
                return
            self._slots.append(slot)
            self.count += 1
            if self.count >= self._dense:
                self._mask, self._slots = _mask_of(self._slots), None
            return
        bit = 1 << slot
        if not self._mask & bit:
            self._mask |= bit
            self.count += 1

    def discard(self, slot: int) -> None:
        if self._slots is not None:
            if slot in self._slots:
                self._slots.remove(slot)
                self.count -= 1
            return
        bit = 1 << slot
        if self._mask & bit:
            self._mask ^= bit
            self.count -= 1
            if self.count < self._dense // 2:  # hysteresis: no rebuild on every flap
                self._slots, self._mask = _slots_of(self._mask), 0

    @property
    def mask(self) -> int:
        return self._mask if self._slots is None else _mask_of(self._slots)


def _slots_of(mask: int) -> list[int]:
    slots = []
    while mask:
        low = mask & -mask
        slots.append(low.bit_length() - 1)
        mask ^= low
    return slots


def _union(sets: Iterable[Members]) -> int:
    """One int for several facts: the dense ones or'ed, the sparse ones' slots built at once."""
    mask = 0
    sparse: list[int] = []
    for members in sets:
        if members._slots is None:
            mask |= members._mask
        else:
            sparse.extend(members._slots)
    return mask | _mask_of(sparse)


class NodeIndex:
    """Nodes by name, and for every fact the filters read, the nodes that have it."""

    def __init__(self, *, dense: int = DENSE) -> None:
        self._dense = dense
        self._lock = threading.Lock()
        self._slot_of: dict[str, int] = {}
        self._facts: list[NodeFacts | None] = []
        self._free: list[int] = []  # a heap: the lowest free slot is reused first
        self._everyone = Members(dense=dense)
        self._ready = Members(dense=dense)
        self._cordoned = Members(dense=dense)
        self._tainted = Members(dense=dense)
        self._keys: dict[str, Members] = {}
        self._values: dict[str, dict[str, Members]] = {}
        #: Label values that are integers, for Gt and Lt: key → value → the integer.
        self._integers: dict[str, dict[str, int]] = {}
        self._numeric_names: dict[str, int] = {}
        self._taints: dict[Taint, tuple[dict[str, str], Members]] = {}
        self._advertised: dict[str, Members] = {}
        self._amounts: dict[str, dict[int, Members]] = {}
        #: Answers since the last fact changed: replaced by a new dict (under the lock) when one
        #: does, so that a reader without the lock gets answers of one state or of the next.
        self._answers: dict[bytes, Decision] = {}
        self._answer_bytes = 0  # their `_weight`s

    def __len__(self) -> int:
        return len(self._slot_of)

    # --- updates ------------------------------------------------------------------------------

    def put(self, node: Node) -> None:
        """A node added or changed (ADDED, MODIFIED, or an item of a list)."""
        facts = facts_of(node)  # outside the lock: the readers never wait for parsing
        with self._lock:
            self._put(facts)

    def remove(self, name: str) -> None:
        with self._lock:
            slot = self._slot_of.pop(name, None)
            if slot is None:
                return
            old = self._facts[slot]
            assert old is not None
            self._forget()
            self._move(slot, old, None)
            self._facts[slot] = None
            heapq.heappush(self._free, slot)

    def _put(self, facts: NodeFacts) -> None:
        slot = self._slot_of.get(facts.name)
        if slot is None:
            slot = heapq.heappop(self._free) if self._free else len(self._facts)
            if slot == len(self._facts):
                self._facts.append(None)
            self._slot_of[facts.name] = slot
        old = self._facts[slot]
        if old == facts:
            return  # nothing the filters read changed (a heartbeat, an image pulled)
        self._forget()
        self._facts[slot] = self._move(slot, old, facts)

    def _move(self, slot: int, old: NodeFacts | None, new: NodeFacts | None) -> NodeFacts | None:
        """Move the node's bit from the facts it had to the ones it has; the stored facts."""
        if old is None:
            self._everyone.add(slot)
            number = None if new is None else _integer(new.name)
            if new is not None and number is not None:
                self._numeric_names[new.name] = number  # for matchFields Gt and Lt
        elif new is None:
            self._everyone.discard(slot)
            self._numeric_names.pop(old.name, None)
        _flip(self._ready, slot, old is not None and old.ready, new is not None and new.ready)
        _flip(
            self._cordoned,
            slot,
            old is not None and old.unschedulable,
            new is not None and new.unschedulable,
        )
        _flip(self._tainted, slot, bool(old and old.taints), bool(new and new.taints))
        old_labels = set(old.labels) if old else set()
        new_labels = set(new.labels) if new else set()
        for key, value in old_labels - new_labels:
            self._label_discard(slot, key, value)
        for key, value in new_labels - old_labels:
            self._label_add(slot, key, value)
        old_taints = set(old.taints) if old else set()
        new_taints = set(new.taints) if new else set()
        for taint in old_taints - new_taints:
            _, members = self._taints[taint]
            members.discard(slot)
            if not members.count:
                del self._taints[taint]
        for taint in new_taints - old_taints:
            if taint not in self._taints:
                as_dict = {"key": taint[0], "value": taint[1], "effect": taint[2]}
                self._taints[taint] = (as_dict, Members(dense=self._dense))
            self._taints[taint][1].add(slot)
        old_devices = set(old.devices) if old else set()
        new_devices = set(new.devices) if new else set()
        for resource, have in old_devices - new_devices:
            amounts = self._amounts[resource]
            amounts[have].discard(slot)
            if not amounts[have].count:
                del amounts[have]
            self._advertised[resource].discard(slot)
            if not self._advertised[resource].count:
                del self._advertised[resource], self._amounts[resource]
        for resource, have in new_devices - old_devices:
            self._advertised.setdefault(resource, Members(dense=self._dense)).add(slot)
            amounts = self._amounts.setdefault(resource, {})
            amounts.setdefault(have, Members(dense=self._dense)).add(slot)
        if new is None:
            return None
        # Keep the shared copies of the label strings, not the ones this event parsed.
        labels = tuple(self._values[k][v].pair for k, v in new.labels)
        return replace(new, labels=labels)

    def _label_add(self, slot: int, key: str, value: str) -> None:
        if key not in self._keys:
            self._keys[key] = Members(key, dense=self._dense)
            self._values[key] = {}
        self._keys[key].add(slot)
        values = self._values[key]
        if value not in values:
            pair = (self._keys[key].text, value)
            values[value] = Members(value, dense=self._dense, pair=pair)
            number = _integer(value)
            if number is not None:
                self._integers.setdefault(key, {})[value] = number
        values[value].add(slot)

    def _label_discard(self, slot: int, key: str, value: str) -> None:
        values = self._values[key]
        values[value].discard(slot)
        if not values[value].count:
            del values[value]
            integers = self._integers.get(key)
            if integers is not None:
                integers.pop(value, None)
                if not integers:
                    del self._integers[key]
        self._keys[key].discard(slot)
        if not self._keys[key].count:
            del self._keys[key], self._values[key]

    # --- questions ----------------------------------------------------------------------------

    def decide(
        self,
        pod: Pod,
        *,
        requests: Mapping[str, int],
        no_kvm_policy: str = DEFAULT_NO_KVM_POLICY,
        kvm_injected: bool = True,
        question: bytes | None = None,
    ) -> Decision:
        """As `webhook.nodes.feasibility.decide` over the same nodes, from the index (or remembered:
        the Decision may be shared, never change it). `question`, when given, must determine
        everything else passed (a `feasibility.launcher_question`); else the index writes its
        own key from what the decision reads."""
        check_policy(no_kvm_policy)
        if question is None:
            question = _question(pod, requests, no_kvm_policy, kvm_injected)
        if question is not None:
            answer = self.remembered(question)
            if answer is not None:
                return answer
        with self._lock:
            answer = self._answers.get(question) if question is not None else None
            if answer is None:
                answer = verdict(
                    self._fit(pod, requests),
                    pod,
                    no_kvm_policy=no_kvm_policy,
                    kvm_injected=kvm_injected,
                    emulated=lambda: self._fit(pod, without_kvm(requests)).feasible,
                )
                if question is not None:
                    self._remember(question, answer)
            return answer

    def _remember(self, question: bytes, answer: Decision) -> None:
        weight = _weight(answer) + len(question)
        if weight > ANSWER_BYTES:
            return
        if len(self._answers) >= ANSWERS or self._answer_bytes + weight > ANSWER_BYTES:
            self._forget()
        self._answers[question] = answer
        self._answer_bytes += weight

    def _forget(self) -> None:
        """A new, empty dict (never emptied in place: see `remembered`)."""
        self._answers = {}
        self._answer_bytes = 0

    def remembered(self, question: bytes) -> Decision | None:
        """The decision taken for `question` since the last fact change, if any: one read of
        the current dict, no lock (a fact change replaces the dict, never empties it in place)."""
        return self._answers.get(question)

    def fit(self, pod: Pod, requests: Mapping[str, int]) -> Fit:
        with self._lock:
            return self._fit(pod, requests)

    def _fit(self, pod: Pod, requests: Mapping[str, int]) -> Fit:
        """The filters of `feasibility.node_reason`, in its order, over every node at once."""
        spec = pod.get("spec") or {}
        tolerations = [t for t in spec.get("tolerations") or () if t]
        everyone = self._everyone.mask
        counts: Counter[str] = Counter()
        left = everyone

        def keep(mask: int, reason: str) -> None:
            nonlocal left
            out = left & ~mask
            if out:
                counts[reason] += out.bit_count()
                left &= mask

        keep(self._ready.mask, "NotReady")
        if not any(toleration_matches(t, CORDON_TAINT) for t in tolerations):
            keep(everyone & ~self._cordoned.mask, "unschedulable")
        wanted = spec.get("nodeName")
        if wanted:
            keep(self._names_mask([wanted]), "nodeName")
        selector = spec.get("nodeSelector") or {}
        if selector:
            mask = everyone
            for key, value in selector.items():
                members = self._values.get(key, {}).get(value)
                mask &= members.mask if members is not None else 0
            keep(mask, "nodeSelector")
        affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
        required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if required is not None:
            mask = 0
            for term in required.get("nodeSelectorTerms") or ():
                mask |= self._term_mask(term or {}, everyone)
            keep(mask, "node affinity")
        if left & self._tainted.mask:
            untolerated = [
                members
                for taint, members in self._taints.values()
                if not any(toleration_matches(t, taint) for t in tolerations)
            ]
            keep(everyone & ~_union(untolerated), "taint")
        placeable = left
        # The nodes with enough of each requested resource, reused by the no-fit answer below.
        enough_of: dict[str, int] = {}
        for resource, amount in requests.items():
            if amount <= 0:
                continue
            enough = enough_of[resource] = self._at_least(resource, amount)
            short = left & ~enough
            if not short:
                continue
            name = short_name(resource)
            advertised = self._advertised.get(resource)
            missing = short & ~(advertised.mask if advertised is not None else 0)
            if missing:
                counts[f"no {name}"] += missing.bit_count()
            for have, members in self._amounts.get(resource, {}).items():
                if have < amount:
                    count = (short & members.mask).bit_count()
                    if count:
                        counts[f"{name} allocatable {have}"] += count
            left &= enough
        feasible = left.bit_count()
        if feasible or not placeable:
            return Fit(feasible, counts, placeable=bool(placeable))
        kvm_short = requests.get(KVM, 0) > 0 and not placeable & enough_of[KVM]
        missing_resource = KVM if kvm_short else None
        if not kvm_short:
            for resource, amount in requests.items():
                if amount > 0 and not placeable & enough_of[resource]:
                    missing_resource = resource
                    break
        return Fit(0, counts, placeable=True, kvm_short=kvm_short, missing=missing_resource)

    def _at_least(self, resource: str, amount: int) -> int:
        """The nodes whose allocatable of `resource` is `amount` or more."""
        amounts = self._amounts.get(resource, {})
        return _union(members for have, members in amounts.items() if have >= amount)

    def _names_mask(self, names: Iterable[Any]) -> int:
        slots = [self._slot_of[n] for n in names if isinstance(n, str) and n in self._slot_of]
        return _mask_of(slots)

    def _term_mask(self, term: Mapping[str, Any], everyone: int) -> int:
        """A NodeSelectorTerm: its requirements ANDed; an empty term matches nothing."""
        expressions = term.get("matchExpressions") or ()
        fields = term.get("matchFields") or ()
        if not expressions and not fields:
            return 0
        mask = everyone
        for requirement in expressions:
            if not mask:
                break
            mask &= self._label_requirement(requirement, everyone)
        for requirement in fields:
            if not mask:
                break
            mask &= self._field_requirement(requirement, everyone)
        return mask

    def _label_requirement(self, requirement: Mapping[str, Any], everyone: int) -> int:
        """`feasibility.requirement_matches` over the labels of every node."""
        key = requirement.get("key") or ""
        operator = requirement.get("operator")
        values = [str(v) for v in requirement.get("values") or ()]
        by_value = self._values.get(key, {})
        if operator in ("In", "NotIn"):
            named = _union(by_value[v] for v in set(values) if v in by_value)
            return named if operator == "In" else everyone & ~named
        if operator in ("Exists", "DoesNotExist"):
            members = self._keys.get(key)
            present = members.mask if members is not None else 0
            return present if operator == "Exists" else everyone & ~present
        if operator in ("Gt", "Lt"):
            bound = _integer(values[0]) if len(values) == 1 else None
            if bound is None:
                return 0
            integers = self._integers.get(key, {})
            return _union(
                by_value[value]
                for value, have in integers.items()
                if (have > bound if operator == "Gt" else have < bound)
            )
        return 0  # an unknown operator matches nothing, as in requirement_matches

    def _field_requirement(self, requirement: Mapping[str, Any], everyone: int) -> int:
        """matchFields: only `metadata.name` is a field a node has."""
        key = requirement.get("key") or ""
        operator = requirement.get("operator")
        values = [str(v) for v in requirement.get("values") or ()]
        if key != "metadata.name":  # absent: only NotIn and DoesNotExist hold
            return everyone if operator in ("NotIn", "DoesNotExist") else 0
        if operator in ("In", "NotIn"):
            named = self._names_mask(set(values))
            return named if operator == "In" else everyone & ~named
        if operator == "Exists":
            return everyone
        if operator in ("Gt", "Lt"):
            bound = _integer(values[0]) if len(values) == 1 else None
            if bound is None:
                return 0
            return self._names_mask(
                name
                for name, have in self._numeric_names.items()
                if (have > bound if operator == "Gt" else have < bound)
            )
        return 0  # DoesNotExist (a name is always there), or an unknown operator


def _weight(decision: Decision) -> int:
    """About the bytes a remembered decision holds: its texts (one byte a character: ASCII
    names and messages) and `ENTRY_BYTES`."""
    return (
        ENTRY_BYTES
        + len(decision.warning or "")
        + len(decision.deny_message or "")
        + sum(len(reason) + 8 for reason in decision.ruled_out)
    )


def _question(
    pod: Pod, requests: Mapping[str, int], no_kvm_policy: str, kvm_injected: bool
) -> bytes | None:
    """Everything a decision reads, as one key (`question_key`): two pods that agree on it get
    the same answer. Requests keep their order (the first device missing is named); maps are
    sorted. None when it cannot be written (an integer beyond 64 bits) or is too long: that
    decision is not remembered."""
    spec = pod.get("spec") or {}
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    try:
        raw = _dumps(
            [
                spec.get("nodeName"),
                spec.get("nodeSelector"),
                affinity.get("requiredDuringSchedulingIgnoredDuringExecution"),
                spec.get("tolerations"),
                is_migration_target(pod),
                list(requests.items()),
                no_kvm_policy,
                kvm_injected,
            ],
        )
    except orjson.JSONEncodeError:
        return None
    return question_key(raw)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _flip(members: Members, slot: int, had: bool, has: bool) -> None:
    if has and not had:
        members.add(slot)
    elif had and not has:
        members.discard(slot)
