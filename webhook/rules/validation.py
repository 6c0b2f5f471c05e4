"""What /validate refuses in a launcher pod: Pod Security baseline, plus exactly what its
KubeVirt release renders, plus NET_ADMIN on compute and the admin's own exceptions.

Validating webhooks run after every mutation, so this sees the pod as it will be stored: if
anything put `privileged` back, or the pod was created while the mutator was unreachable
(`failurePolicy: Ignore`), it is caught here. Namespaces that run root launchers, passt,
virtiofs or post-copy migration must run Pod Security `privileged` (KubeVirt's PSA feature gate
labels them so itself), and there Pod Security enforces nothing: this is the guard.

Pure: from a `Launcher` to violations, each with its field path and the offending value.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from virtdev import catalogue
from webhook.rules import baseline, shapes
from webhook.rules.answer import MAX_WARNING
from webhook.rules.launcher import Launcher, Slot
from webhook.rules.policy import (
    LauncherPolicy,
    normalise_capability,
    normalise_host_path,
    permitted,
)


@dataclass(frozen=True, slots=True)
class Violation:
    #: Where, as `kubectl explain` would spell it: `spec.initContainers[0].securityContext...`.
    path: str
    #: The offending value as the pod spells it.
    value: str
    #: Why it is refused.
    reason: str
    #: What the violation is, independent of list positions, to compare a pod with its old self.
    key: tuple[str, ...]
    #: The Pod Security check it breaks, by PSA's own id (`capabilities_baseline`, `sysctls`…):
    #: the rule in a PolicyReport, the label of the denials metric.
    control: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.value} ({self.reason})"


def _allowed_types(launcher: Launcher, policy: LauncherPolicy) -> frozenset[str]:
    types = policy.baseline.controls.selinux_types
    if not launcher.exceptions:  # not a launcher: baseline's types only
        return types
    own = launcher.release.profile.selinux_type
    return types | ({own} if own else set()) | policy.selinux_types


def _selinux(
    options: Any,
    where: str,
    key: tuple[str, ...],
    allowed: frozenset[str],
    who: str,
    policy: LauncherPolicy,
) -> Iterator[Violation]:
    if not options:
        return
    kind = options.get("type") or ""
    if kind not in allowed:
        reason = _baseline_allows(policy.baseline.controls.selinux_types)
        if who:
            reason += f", {who} does not render it, an admin may allow it with "
            reason += "--selinux-launcher-types"
        yield Violation(
            f"{where}.seLinuxOptions.type",
            kind,
            reason,
            (*key, "selinux-type", kind),
            "seLinuxOptions",
        )
    for field in ("user", "role"):
        value = options.get(field) or ""
        if value:
            yield Violation(
                f"{where}.seLinuxOptions.{field}",
                value,
                f"Pod Security baseline forbids a custom SELinux {field}",
                (*key, f"selinux-{field}", value),
                "seLinuxOptions",
            )


def _baseline_allows(selinux_types: frozenset[str]) -> str:
    return "Pod Security baseline allows " + ", ".join(sorted(t for t in selinux_types if t))


def _profiles(
    security: dict[str, Any], where: str, key: tuple[str, ...], policy: LauncherPolicy
) -> Iterator[Violation]:
    """seccomp, AppArmor and Windows hostProcess: the same rules at pod and container level."""
    fields = [("appArmorProfile", baseline.APPARMOR_TYPES, "appArmorProfile")]
    if policy.baseline.controls.seccomp_fields:  # before 1.19: the annotations only
        fields.insert(0, ("seccompProfile", baseline.SECCOMP_TYPES, "seccompProfile_baseline"))
    for field, allowed, control in fields:
        kind = (security.get(field) or {}).get("type")
        if kind is not None and kind not in allowed:
            yield Violation(
                f"{where}.{field}.type",
                kind,
                f"Pod Security baseline allows {' or '.join(sorted(allowed, reverse=True))}",
                (*key, field, kind),
                control,
            )
    if (security.get("windowsOptions") or {}).get("hostProcess") is True:
        yield Violation(
            f"{where}.windowsOptions.hostProcess",
            "true",
            "Pod Security baseline forbids Windows host processes",
            (*key, "hostProcess"),
            "windowsHostProcess",
        )


def _pod_level(
    launcher: Launcher, policy: LauncherPolicy, selinux_types: frozenset[str]
) -> Iterator[Violation]:
    spec, profile = launcher.spec, launcher.release.profile
    for name in baseline.HOST_NAMESPACES:
        if name == "hostNetwork" and _hotplug_host_network(launcher):
            continue  # KubeVirt v0.36 - v0.46 render their hotplug pods so
        if spec.get(name) is True:
            yield Violation(
                f"spec.{name}",
                "true",
                "Pod Security baseline forbids host namespaces",
                (name,),
                "hostNamespaces",
            )
    security = spec.get("securityContext") or {}
    yield from _selinux(
        security.get("seLinuxOptions"),
        "spec.securityContext",
        ("pod",),
        selinux_types,
        launcher.exceptions,
        policy,
    )
    yield from _profiles(security, "spec.securityContext", ("pod",), policy)
    safe = policy.baseline.controls.sysctls
    for index, sysctl in enumerate(security.get("sysctls") or ()):
        name = (sysctl or {}).get("name") or ""
        if name not in safe:
            yield Violation(
                f"spec.securityContext.sysctls[{index}].name",
                name,
                f"not one of the sysctls Pod Security baseline {policy.baseline.name} calls safe",
                ("sysctl", name),
                "sysctls",
            )
    annotations = (launcher.pod.get("metadata") or {}).get("annotations") or {}
    if not policy.baseline.controls.seccomp_fields:
        yield from _seccomp_annotations(launcher, annotations)
    for key, value in annotations.items():
        if key.startswith(baseline.APPARMOR_ANNOTATION_PREFIX):
            if not baseline.apparmor_annotation_allowed(value):
                yield Violation(
                    f"metadata.annotations[{key}]",
                    value,
                    "Pod Security baseline allows runtime/default or localhost/<profile>",
                    ("apparmor-annotation", key, value),
                    "appArmorProfile",
                )
    for index, volume in enumerate(spec.get("volumes") or ()):
        host_path = (volume or {}).get("hostPath")
        if host_path is None:
            continue
        path = host_path.get("path") or ""
        who = launcher.exceptions
        normal = normalise_host_path(path)
        if who and (profile.mounts(normal, vmi=launcher.vmi) or policy.host_path_permitted(path)):
            continue
        reason = "Pod Security baseline forbids hostPath volumes"
        if who:
            reason += f", {who} mounts {' '.join(sorted(profile.host_paths)) or 'none'}, "
            reason += "an admin may allow a prefix with --permitted-host-paths"
        yield Violation(
            f"spec.volumes[{index}].hostPath.path",
            path,
            reason,
            ("hostPath", str(volume.get("name")), normal),
            "hostPathVolumes",
        )


def _seccomp_annotations(launcher: Launcher, annotations: dict[str, Any]) -> Iterator[Violation]:
    """Before 1.19 baseline judges seccomp by the alpha annotations: the pod's and those of the
    pod's containers (check_seccompProfile_baseline.go:86-115)."""
    names = {baseline.SECCOMP_POD_ANNOTATION}
    names.update(
        baseline.SECCOMP_CONTAINER_ANNOTATION_PREFIX + str(slot.container.get("name"))
        for slot in launcher.slots
    )
    for key, value in annotations.items():
        if key in names and not baseline.seccomp_annotation_allowed(str(value)):
            yield Violation(
                f"metadata.annotations[{key}]",
                str(value),
                "Pod Security baseline allows runtime/default, docker/default or "
                "localhost/<profile>",
                ("seccomp-annotation", key, str(value)),
                "seccompProfile_baseline",
            )


def _hotplug_host_network(launcher: Launcher) -> bool:
    """Whether the pod is a hotplug pod its release puts on the host's network (v0.36 - v0.46)."""
    return (
        launcher.hotplug
        and launcher.release.profile.hotplug_host_network
        and (launcher.spec.get("hostNetwork") is True)
    )


def _beyond_baseline(allowed: frozenset[str]) -> str:
    return ", ".join(sorted(allowed - baseline.CAPABILITIES)) or "none"


def _container_level(
    slot: Slot,
    launcher: Launcher,
    policy: LauncherPolicy,
    selinux_types: frozenset[str],
    host_paths: dict[Any, str],
) -> Iterator[Violation]:
    container, where = slot.container, f"{slot.path}.securityContext"
    name = str(container.get("name"))
    key = (slot.list_field, name)
    security = container.get("securityContext") or {}
    # Who grants this container exceptions: its release, or nobody (added or changed by a
    # tenant, whose containers are judged by baseline alone).
    who = launcher.exceptions if slot.trusted else ""
    if not slot.trusted:
        baseline_types = policy.baseline.controls.selinux_types
        yield from _untrusted_container(slot, launcher, selinux_types, baseline_types, host_paths)
        selinux_types = baseline_types
    if security.get("privileged") is True:
        reason = "Pod Security baseline forbids privileged containers"
        if who:
            reason += ", virtdev provides /dev/kvm and /dev/net/tun to launchers as devices"
        yield Violation(f"{where}.privileged", "true", reason, (*key, "privileged"), "privileged")
    adds = (security.get("capabilities") or {}).get("add") or ()
    if adds:
        allowed = slot.capabilities
        reason = ""
        for index, capability in enumerate(adds):
            # Compared as spelt, as Pod Security compares them: one set lookup; a pod of a
            # million capabilities is answered in bounded time by the caller, which stops.
            if capability in allowed:
                continue
            if permitted(allowed, capability):  # allowed, but not as the runtime spells it
                canonical = normalise_capability(capability)
                yield Violation(
                    f"{where}.capabilities.add[{index}]",
                    capability,
                    f"Pod Security compares capability names as spelt: write {canonical}",
                    (*key, "capability-spelling", capability),
                    "capabilities_baseline",
                )
                continue
            if not reason:
                reason = "beyond Pod Security baseline"
                if who:
                    reason += (
                        f", and {who} adds to {slot.role} containers "
                        f"only {_beyond_baseline(allowed)}"
                    )
                elif not slot.trusted:
                    reason += _changed_by(launcher)
            yield Violation(
                f"{where}.capabilities.add[{index}]",
                capability,
                reason,
                (*key, "capability", normalise_capability(capability)),
                "capabilities_baseline",
            )
    yield from _selinux(security.get("seLinuxOptions"), where, key, selinux_types, who, policy)
    yield from _profiles(security, where, key, policy)
    proc_mount = security.get("procMount") or ""
    own_user_namespace = launcher.spec.get("hostUsers") is False
    if proc_mount not in baseline.PROC_MOUNTS and not (
        own_user_namespace and policy.baseline.controls.user_namespaces
    ):
        yield Violation(
            f"{where}.procMount",
            proc_mount,
            "Pod Security baseline requires the default /proc masks outside a user namespace",
            (*key, "procMount", proc_mount),
            "procMount",
        )
    for index, port in enumerate(container.get("ports") or ()):
        host_port = (port or {}).get("hostPort") or 0
        if host_port:
            yield Violation(
                f"{slot.path}.ports[{index}].hostPort",
                str(host_port),
                "Pod Security baseline forbids host ports",
                (*key, "hostPort", str(host_port)),
                "hostPorts",
            )
    if policy.baseline.controls.host_probes:
        yield from _probe_hosts(slot, key)


def _changed_by(launcher: Launcher) -> str:
    if not launcher.changed_by:  # the audit of a running pod: who added it is not known
        return " (an ephemeral container: KubeVirt renders none)"
    return f" (container added or changed by {launcher.changed_by}, not by KubeVirt's controller)"


def _host_path_volumes(launcher: Launcher) -> dict[Any, str]:
    """The pod's hostPath volumes by name (worked out once per pod, not once per container)."""
    return {
        volume.get("name"): (volume.get("hostPath") or {}).get("path") or ""
        for volume in launcher.spec.get("volumes") or ()
        if volume and volume.get("hostPath") is not None
    }


def _untrusted_container(
    slot: Slot,
    launcher: Launcher,
    granted: frozenset[str],
    types: frozenset[str],
    host_paths: dict[Any, str],
) -> Iterator[Violation]:
    """What the pod's own exceptions would lend a container that a tenant added or re-imaged,
    and baseline forbids it: the pod's hostPath volumes (PSA judges only the volume, which the
    pod already had), the host namespaces the pod shares (a v0.36 - v0.46 hotplug pod's
    network), and the pod's SELinux type where the container sets none of its own."""
    name = str(slot.container.get("name"))
    spec = launcher.spec
    # The one host namespace a release grants (its hotplug pod's network): not to this one.
    if _hotplug_host_network(launcher):
        yield Violation(
            "spec.hostNetwork",
            "true",
            f"Pod Security baseline forbids host namespaces, and {name} would share it"
            + _changed_by(launcher),
            (slot.list_field, name, "host-namespace", "hostNetwork"),
            "hostNamespaces",
        )
    # The pod's type, granted by its release (an ungranted one is the pod's own violation).
    own = ((slot.container.get("securityContext") or {}).get("seLinuxOptions") or {}).get("type")
    inherited = ((spec.get("securityContext") or {}).get("seLinuxOptions") or {}).get("type")
    if not own and inherited and inherited in granted and inherited not in types:
        yield Violation(
            f"{slot.path}.securityContext.seLinuxOptions.type",
            f"{inherited} (the pod's)",
            _baseline_allows(types) + ": set one of them on the container" + _changed_by(launcher),
            (slot.list_field, name, "selinux-inherited", str(inherited)),
            "seLinuxOptions",
        )
    yield from _host_path_mounts(slot, launcher, host_paths)


def _host_path_mounts(
    slot: Slot, launcher: Launcher, host_paths: dict[Any, str]
) -> Iterator[Violation]:
    if not host_paths:
        return
    name = str(slot.container.get("name"))
    for field in ("volumeMounts", "volumeDevices"):
        mounts = slot.container.get(field)
        shapes.check(mounts, shapes.MOUNTS, f"$.request.object.{slot.path}.{field}")
        for index, mount in enumerate(mounts or ()):
            volume = (mount or {}).get("name")
            if volume in host_paths:
                yield Violation(
                    f"{slot.path}.{field}[{index}].name",
                    str(volume),
                    f"a hostPath volume ({host_paths[volume]}): Pod Security baseline forbids "
                    "host paths" + _changed_by(launcher),
                    (slot.list_field, name, "hostPath-mount", str(volume)),
                    "hostPathVolumes",
                )


def _probe_hosts(slot: Slot, key: tuple[str, ...]) -> Iterator[Violation]:
    container = slot.container
    handlers: list[tuple[str, Any]] = [(probe, container.get(probe)) for probe in baseline.PROBES]
    lifecycle = container.get("lifecycle") or {}
    handlers += [(f"lifecycle.{hook}", lifecycle.get(hook)) for hook in baseline.LIFECYCLE_HOOKS]
    for where, handler in handlers:
        if not handler:
            continue
        for kind in baseline.HANDLERS_WITH_HOST:
            host = (handler.get(kind) or {}).get("host") or ""
            if host:
                yield Violation(
                    f"{slot.path}.{where}.{kind}.host",
                    host,
                    "Pod Security baseline forbids probe and lifecycle hosts",
                    (*key, "probe-host", where, host),
                    "hostProbesAndHostLifecycle",
                )


def violations(launcher: Launcher, policy: LauncherPolicy) -> Iterator[Violation]:
    """Every reason to refuse this launcher pod, pod-level first, in the pod's order."""
    selinux_types = _allowed_types(launcher, policy)
    yield from _pod_level(launcher, policy, selinux_types)
    host_paths = {}
    if not all(slot.trusted for slot in launcher.slots):
        host_paths = _host_path_volumes(launcher)
    for slot in launcher.slots:
        yield from _container_level(slot, launcher, policy, selinux_types, host_paths)


#: How many of an UPDATE's old violations are remembered (far more than any real pod has).
MAX_OLD = 100_000


def new_violations(
    launcher: Launcher, old: Launcher | None, policy: LauncherPolicy
) -> Iterator[Violation]:
    """On UPDATE, only what the change introduces: old launchers must stay updatable."""
    if old is None:
        yield from violations(launcher, policy)
        return
    before: set[tuple[str, ...]] | None = None
    for violation in violations(launcher, policy):
        if before is None:  # only an update with violations needs the old pod's
            # Bounded: an old pod past this many violations has its later ones judged new.
            before = {v.key for v in itertools.islice(violations(old, policy), MAX_OLD)}
        if violation.key not in before:
            yield violation


def device_warnings(launcher: Launcher) -> list[str]:
    """A compute container that requests no hypervisor device will not find /dev/kvm: allowed,
    but said (unless the VM runs emulated)."""
    compute = launcher.compute
    if compute is None or launcher.emulated or launcher.requests_hypervisor:
        return []
    text = f"{compute.path} requests no {catalogue.RESOURCE_DOMAIN}/kvm: the VM may lack KVM"
    return [text[:MAX_WARNING]]
