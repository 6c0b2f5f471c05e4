"""From a parsed review to an answer: which requests the rules apply to, and how they reply.

Pure: no HTTP, no clock, no cluster (the node view's snapshot is passed in). The HTTP layer
(`webhook.serving.app`), `virtdev mutate`/`validate` (`webhook.offline`) and `virtdev audit`
(`webhook.audit`) all call `mutate_review`, `validate_review` and `guard_review`, so `virtdev
mutate` shows exactly what /mutate would answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtdev.catalogue import Device
from webhook.nodes.feasibility import (
    KVM,
    Decision,
    NodeSnapshot,
    launcher_question,
    pod_requests,
    requested_device_resources,
)
from webhook.options import DEFAULT_NO_KVM_POLICY, NoKvmPolicy
from webhook.rules import profiles, shapes
from webhook.rules.answer import Answer, fit_warning
from webhook.rules.launcher import (
    Launcher,
    Release,
    hotplug_release,
    is_hotplug,
    read_launcher,
    read_pod,
    requester_annotation,
    requester_name,
    untrusted,
    with_changes_untrusted,
)
from webhook.rules.mutation import mutate
from webhook.rules.policy import LauncherPolicy
from webhook.rules.validation import Violation, device_warnings, new_violations

POD_KINDS = ("Pod", "EphemeralContainers")


# Not frozen: a frozen dataclass sets each of its ten fields through object.__setattr__, a
# quarter of what parsing costs beyond orjson.loads (bench/webhook_instructions.py's method).
@dataclass(slots=True)
class Request:
    api_version: str
    uid: str
    kind: str
    resource: str
    sub_resource: str
    operation: str
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    #: `userInfo.username` of the requester, as the API server vouches for it ("" when not
    #: sent): whether a launcher gets its release's exceptions (`--kubevirt-controllers`), and
    #: the log line of a denial.
    username: str = ""

    @property
    def display_name(self) -> str:
        """`namespace/name` for logs; a CREATE with generateName has no name yet.

        Skipped objects are never schema-checked, so only string names are taken from them.
        """
        name = self.name
        if not name and self.object:
            metadata = self.object.get("metadata")
            if isinstance(metadata, dict):
                for key in ("name", "generateName"):
                    if isinstance(metadata.get(key), str) and metadata[key]:
                        name = metadata[key]
                        break
        return f"{self.namespace}/{name}" if self.namespace else name


def as_pod(obj: dict[str, Any], kind: str, path: str) -> dict[str, Any]:
    """Check the rest of the fields the rules read — the metadata was checked first, by
    `_labels_checked` — and give the pre-1.22 EphemeralContainers form a spec."""
    if kind == "EphemeralContainers":
        containers = obj.get("ephemeralContainers")
        shapes.check(containers, shapes.CONTAINERS, f"{path}.ephemeralContainers")
        return {"metadata": obj.get("metadata"), "spec": {"ephemeralContainers": containers}}
    shapes.check(obj.get("spec"), shapes.POD_SPEC, f"{path}.spec")
    return obj


def _labels_checked(obj: dict[str, Any] | None, path: str) -> None:
    """Deciding whether a pod is a launcher reads its labels: check the metadata first."""
    if obj is not None:
        shapes.check(obj.get("metadata"), shapes.METADATA, f"{path}.metadata")


def mutate_review(
    request: Request,
    policy: LauncherPolicy,
    *,
    nodes: NodeSnapshot | None = None,
    no_kvm_policy: NoKvmPolicy = DEFAULT_NO_KVM_POLICY,
) -> Answer:
    """/mutate: patch launcher pods on CREATE; anything else is allowed untouched."""
    answer, _ = mutate_review_decided(request, policy, nodes=nodes, no_kvm_policy=no_kvm_policy)
    return answer


def mutate_review_decided(
    request: Request,
    policy: LauncherPolicy,
    *,
    nodes: NodeSnapshot | None = None,
    no_kvm_policy: NoKvmPolicy = DEFAULT_NO_KVM_POLICY,
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
    if not policy.trusts(request.username):
        # Not KubeVirt's pod, whatever its label says: nothing to rewrite it into (a tenant's
        # privileged pod must not become one that /validate allows). /validate judges it.
        other = requester_name(request.username)
        answer = Answer(
            allowed=True,
            verdict="skipped",
            audit_annotations={"requester": requester_annotation(other)},
            other_requester=other,
        )
        return answer, None
    pod = as_pod(obj, request.kind, "$.request.object")
    launcher = read_launcher(pod, policy)
    profile_note = {"profile": launcher.release.describe()}
    injected = launcher.injected
    decision = None
    if nodes is not None:
        decision = _schedule(launcher, injected, nodes=nodes, no_kvm_policy=no_kvm_policy)
        if decision.deny_message is not None:
            return Answer(
                allowed=False,
                verdict="denied",
                status_code=403,
                message=f"launcher pod {request.display_name} refused by virtdev: "
                + decision.deny_message,
                audit_annotations={"scheduling": decision.outcome, **profile_note},
            ), decision
        if decision.emulate:  # kvm withheld: no node could give it
            injected = launcher.injected_without_kvm
    mutation = mutate(launcher, policy, injected=injected)
    if decision is not None and decision.warning:
        mutation.warn(decision.warning)
    answer = Answer(
        allowed=True,
        verdict="patched" if mutation.patch else ("warned" if mutation.warnings else "allowed"),
        patch=mutation.patch,
        warnings=mutation.warnings,
        audit_annotations=dict(profile_note),
    )
    if mutation.changes:
        answer.audit_annotations["mutation"] = "; ".join(mutation.changes)[:1024]
    if decision is not None and decision.outcome != "feasible":
        answer.audit_annotations["scheduling"] = decision.outcome
    return answer, decision


def _schedule(
    launcher: Launcher,
    devices: tuple[Device, ...],
    *,
    nodes: NodeSnapshot,
    no_kvm_policy: NoKvmPolicy,
) -> Decision:
    """The feasibility decision for the pod once compute requests `devices` too.

    A pool's launchers ask the same question: it is looked up before anything is computed."""
    if not nodes.synced:
        return Decision("unsynced")
    resources = [device.resource for device in devices]
    question = launcher_question(launcher.pod, resources, no_kvm_policy)
    known = nodes.remembered(question) if question is not None else None
    if known is not None:
        return known
    shapes.check(launcher.pod, shapes.SCHEDULING, "$.request.object")  # what the filters read
    injected = set(resources)
    already = requested_device_resources(launcher.pod)  # not on /validate's path
    wanted = pod_requests(launcher.pod, injected | already)
    for resource in injected:
        wanted[resource] = max(wanted[resource], 1)
    return nodes.decide(
        launcher.pod,
        requests=wanted,
        no_kvm_policy=no_kvm_policy,
        kvm_injected=KVM in injected and KVM not in already,
        question=question,
    )


#: Violations named in a denial; the rest are counted ("and N more") up to MAX_COUNTED, so that
#: a pod of a million capabilities is answered with a message of normal size, in bounded time.
MAX_VIOLATIONS = 16
MAX_COUNTED = 10_000


def _pods_judged(request: Request) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The new and old pod of a CREATE or UPDATE (kubectl debug's included), metadata checked;
    None for anything the validators do not judge."""
    if request.operation not in ("CREATE", "UPDATE") or request.kind not in POD_KINDS:
        return None
    obj, old = request.object, request.old_object
    if obj is None:
        return None
    _labels_checked(obj, "$.request.object")
    _labels_checked(old, "$.request.oldObject")
    return obj, old


def guard_review(
    request: Request, policy: LauncherPolicy, *, trusted: bool | None = None
) -> Answer:
    """/guard: Pod Security baseline for every pod of a namespace that opted in; a launcher is
    judged exactly as /validate judges it, and a hotplug pod by its release, when KubeVirt's
    controller asked for it. `trusted` overrides what `request.userInfo` says (the audit)."""
    objects = _pods_judged(request)
    if objects is None:
        return Answer(allowed=True, verdict="skipped")
    obj, old = objects
    if policy.is_launcher(obj) or policy.is_launcher(old):
        return validate_review(request, policy, trusted=trusted)
    if trusted is None:
        trusted = policy.trusts(request.username)
    new_pod = as_pod(obj, request.kind, "$.request.object")
    old_object = None
    if request.operation == "UPDATE" and old is not None:
        old_object = as_pod(old, request.kind, "$.request.oldObject")
    hotplug = is_hotplug(obj) or is_hotplug(old)
    release, other = None, ""
    if hotplug and old_object is not None:  # admitted as it is: its release stands
        release = hotplug_release(old_object, policy)
    elif hotplug and trusted:
        release = hotplug_release(new_pod, policy)
    elif hotplug:
        release = Release(profiles.BASELINE, untrusted("hotplug", request.username))
        other = requester_name(request.username)
    pod = read_pod(new_pod, policy, release=release, other_requester=other)
    if old_object is not None:
        old_pod = read_pod(old_object, policy, release=release)
        if not trusted:
            pod = with_changes_untrusted(pod, old_pod, request.username, labelled=hotplug)
        return _judged(request, pod, old_pod, policy, subject="pod")
    return _judged(request, pod, None, policy, subject="pod")


def validate_review(
    request: Request, policy: LauncherPolicy, *, trusted: bool | None = None
) -> Answer:
    """/validate: Pod Security baseline plus the launcher's release exceptions, on CREATE and on
    UPDATE (incl. kubectl debug); on UPDATE only what the change introduces counts.

    The exceptions are for KubeVirt's controller alone (`--kubevirt-controllers`, matched with
    `request.userInfo.username`: what the API server vouches for, never the pod's labels):
    anyone else's launcher-labelled pod is judged by Pod Security baseline, and on UPDATE the
    containers anyone else adds or re-images get no exception. `trusted` overrides the
    requester (`virtdev audit`, which cannot see who created a running pod)."""
    objects = _pods_judged(request)
    if objects is None:
        return Answer(allowed=True, verdict="skipped")
    obj, old = objects
    # Removing the label in the same update must not be a way out of the check.
    if not (policy.is_launcher(obj) or policy.is_launcher(old)):
        return Answer(allowed=True, verdict="skipped")
    if trusted is None:
        trusted = policy.trusts(request.username)
    new_pod = as_pod(obj, request.kind, "$.request.object")
    if request.operation != "UPDATE" or old is None:
        if not trusted:
            release = Release(profiles.BASELINE, untrusted("launcher", request.username))
            other = requester_name(request.username)
            pod = read_pod(new_pod, policy, release=release, other_requester=other)
            return _judged(request, pod, None, policy, subject="pod")
        launcher = read_launcher(new_pod, policy)
        return _judged(request, launcher, None, policy, subject="launcher pod")
    # An UPDATE: the pod was admitted as it stands, so what it had keeps its release's
    # exceptions (labels and annotations stay editable). Both are judged by the release of the
    # pod as admitted, like with like: a new image must not choose another release. Containers
    # anyone but KubeVirt's controller added or re-imaged are judged without exceptions.
    old_launcher = read_launcher(as_pod(old, request.kind, "$.request.oldObject"), policy)
    launcher = read_launcher(new_pod, policy, release=old_launcher.release, vmi=old_launcher.vmi)
    if not trusted:
        launcher = with_changes_untrusted(launcher, old_launcher, request.username, labelled=True)
    return _judged(request, launcher, old_launcher, policy, subject="launcher pod")


def profile_label(release: Release) -> str:
    """The profile as a metric label and report property: `v0.20`, `v1.7+` or `baseline`."""
    return "baseline" if release.profile is profiles.BASELINE else release.profile.name


def _judged(
    request: Request,
    launcher: Launcher,
    old_launcher: Launcher | None,
    policy: LauncherPolicy,
    *,
    subject: str,
) -> Answer:
    """The verdict on a pod read once: its new violations, the first few named, the rest counted;
    annotated and counted as another's pod where the reading says so (`other_requester`)."""
    shown: list[Violation] = []
    controls: set[str] = set()
    more = 0
    for violation in new_violations(launcher, old_launcher, policy):
        controls.add(violation.control)
        if len(shown) < MAX_VIOLATIONS:
            shown.append(violation)
        elif more < MAX_COUNTED:
            more += 1
        else:  # the verdict is long known: stop looking
            more = -1
            break
    judged_by = launcher.release.describe(policy.baseline.name)
    profile_note = {"profile": judged_by}
    other = launcher.other_requester
    if other:
        profile_note["requester"] = requester_annotation(other)
    if shown:
        listed = [str(violation) for violation in shown]
        if more:
            listed.append(f"and {more} more" if more > 0 else f"and more than {MAX_COUNTED} more")
        return Answer(
            allowed=False,
            verdict="denied",
            status_code=403,
            message=f"{subject} {request.display_name} refused by virtdev "
            f"({judged_by}): " + "; ".join(listed),
            audit_annotations={
                "violations": "; ".join(v.path for v in shown)[:1024],
                **profile_note,
            },
            violations=listed,
            controls=tuple(sorted(controls)),
            profile=profile_label(launcher.release),
            findings=[(v.control, text) for v, text in zip(shown, listed, strict=False)],
            other_requester=other,
        )
    warnings = []
    if request.operation == "CREATE" and launcher.exceptions:
        warnings = device_warnings(launcher)
    elif request.operation == "CREATE" and other:
        # The verdict first: a long username is what the 120-character limit cuts.
        warnings = [fit_warning(f"judged by Pod Security baseline: {launcher.release.why}")]
    return Answer(
        allowed=True,
        verdict="warned" if warnings else "allowed",
        warnings=warnings,
        audit_annotations=profile_note,
        profile=profile_label(launcher.release),
        other_requester=other,
    )
