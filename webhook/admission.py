"""From a parsed review to an answer: which requests the rules apply to, and how they reply.

Pure: no HTTP, no clock, no cluster. The HTTP layer (`app`) and the offline CLI (`offline`)
both call these two functions, so `virtdev mutate` shows exactly what /mutate would answer.
"""

from __future__ import annotations

from typing import Any

from webhook import schema
from webhook.feasibility import (
    DEFAULT_NO_KVM_POLICY,
    KVM,
    Decision,
    NodeSnapshot,
    pod_requests,
    requested_device_resources,
)
from webhook.mutation import mutate, wanted_devices
from webhook.policy import LauncherPolicy, find_compute
from webhook.review import Answer, Request
from webhook.validation import device_warnings, new_violations

POD_KINDS = ("Pod", "EphemeralContainers")


def as_pod(obj: dict[str, Any], kind: str, path: str) -> dict[str, Any]:
    """Check the rest of the fields the rules read — the metadata was checked first, by
    `_labels_checked` — and give the pre-1.22 EphemeralContainers form a spec."""
    if kind == "EphemeralContainers":
        containers = obj.get("ephemeralContainers")
        schema.check(containers, schema.CONTAINERS, f"{path}.ephemeralContainers")
        return {"metadata": obj.get("metadata"), "spec": {"ephemeralContainers": containers}}
    schema.check(obj.get("spec"), schema.POD_SPEC, f"{path}.spec")
    return obj


def _labels_checked(obj: dict[str, Any] | None, path: str) -> None:
    """Deciding whether a pod is a launcher reads its labels: check the metadata first."""
    if obj is not None:
        schema.check(obj.get("metadata"), schema.METADATA, f"{path}.metadata")


def mutate_review(
    request: Request,
    policy: LauncherPolicy,
    *,
    emulate: bool = False,
    nodes: NodeSnapshot | None = None,
    no_kvm_policy: str = DEFAULT_NO_KVM_POLICY,
) -> Answer:
    """/mutate: patch launcher pods on CREATE; anything else is allowed untouched."""
    answer, _ = mutate_review_decided(
        request, policy, emulate=emulate, nodes=nodes, no_kvm_policy=no_kvm_policy
    )
    return answer


def mutate_review_decided(
    request: Request,
    policy: LauncherPolicy,
    *,
    emulate: bool = False,
    nodes: NodeSnapshot | None = None,
    no_kvm_policy: str = DEFAULT_NO_KVM_POLICY,
) -> tuple[Answer, Decision | None]:
    """`mutate_review`, and the scheduling decision taken (None when no nodes were consulted).

    `nodes` is the webhook's view of the cluster (None: no cluster configured). An unsynced
    view never blocks admission: the pod is patched as usual and the decision says `unsynced`.
    """
    obj = request.object
    if (
        request.operation != "CREATE"
        or request.kind != "Pod"
        or request.sub_resource
        or obj is None
    ):
        return Answer(allowed=True, verdict="skipped"), None
    _labels_checked(obj, "$.request.object")
    if not policy.is_launcher(obj):
        return Answer(allowed=True, verdict="skipped"), None
    pod = as_pod(obj, request.kind, "$.request.object")
    decision = None
    if nodes is not None:
        if nodes.synced:  # what the feasibility check will read
            schema.check(pod, schema.SCHEDULING, "$.request.object")
        decision = _schedule(pod, policy, emulate=emulate, nodes=nodes, no_kvm_policy=no_kvm_policy)
        if decision.deny_message is not None:
            return Answer(
                allowed=False,
                verdict="denied",
                status_code=403,
                message=f"launcher pod {request.display_name} refused by virtdev: "
                + decision.deny_message,
                audit_annotations={"scheduling": decision.outcome},
            ), decision
        emulate = emulate or decision.emulate
    mutation = mutate(pod, policy, emulate=emulate)
    if decision is not None and decision.warning:
        mutation.warn(decision.warning)
    answer = Answer(
        allowed=True,
        verdict="patched" if mutation.patch else ("warned" if mutation.warnings else "allowed"),
        patch=mutation.patch,
        warnings=mutation.warnings,
    )
    if mutation.changes:
        answer.audit_annotations["mutation"] = "; ".join(mutation.changes)[:1024]
    if decision is not None and decision.outcome != "feasible":
        answer.audit_annotations["scheduling"] = decision.outcome
    return answer, decision


def _schedule(
    pod: dict[str, Any],
    policy: LauncherPolicy,
    *,
    emulate: bool,
    nodes: NodeSnapshot,
    no_kvm_policy: str,
) -> Decision:
    """The feasibility decision for the devices the pod will request once patched as usual."""
    if not nodes.synced:
        return Decision("unsynced")
    spec = pod.get("spec") or {}
    index = find_compute(spec, policy.compute_container)
    injected: set[str] = set()  # no compute container: the mutation adds nothing
    if index is not None:
        compute = spec["containers"][index]
        injected = {d.resource for d in wanted_devices(compute, policy, emulate=emulate)}
    already = requested_device_resources(pod)
    wanted = pod_requests(pod, injected | already)
    for resource in injected:
        wanted[resource] = max(wanted[resource], 1)
    return nodes.decide(
        pod,
        requests=wanted,
        no_kvm_policy=no_kvm_policy,
        kvm_injected=KVM in injected and KVM not in already,
    )


def validate_review(request: Request, policy: LauncherPolicy) -> Answer:
    """/validate: refuse privileged launcher pods, on CREATE and on UPDATE (incl. kubectl debug)."""
    if request.operation not in ("CREATE", "UPDATE") or request.kind not in POD_KINDS:
        return Answer(allowed=True, verdict="skipped")
    obj, old = request.object, request.old_object
    if obj is None:
        return Answer(allowed=True, verdict="skipped")
    _labels_checked(obj, "$.request.object")
    _labels_checked(old, "$.request.oldObject")
    # Removing the label in the same update must not be a way out of the check.
    if not (policy.is_launcher(obj) or policy.is_launcher(old)):
        return Answer(allowed=True, verdict="skipped")
    pod = as_pod(obj, request.kind, "$.request.object")
    old_pod = None
    if request.operation == "UPDATE" and old is not None:
        old_pod = as_pod(old, request.kind, "$.request.oldObject")
    found = new_violations(pod, old_pod, policy)
    if found:
        message = f"launcher pod {request.display_name} refused by virtdev: " + "; ".join(
            map(str, found)
        )
        return Answer(
            allowed=False,
            verdict="denied",
            status_code=403,
            message=message,
            audit_annotations={"violations": "; ".join(v.path for v in found)[:1024]},
        )
    warnings = device_warnings(pod, policy) if request.operation == "CREATE" else []
    return Answer(allowed=True, verdict="warned" if warnings else "allowed", warnings=warnings)
