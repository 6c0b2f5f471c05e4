"""What /mutate does to a launcher pod, as a pure function from pod to JSON Patch.

The patch must apply to the object exactly as the API server sent it: a patch that decodes but
does not apply rejects the pod even under `failurePolicy: Ignore`. So every `add` below targets
a parent that exists in *this* object, missing parents are added whole, and `/` in resource
names is escaped. Running the rules again on the patched pod yields no operation, which is what
`reinvocationPolicy: IfNeeded` requires.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from virtdev import catalogue
from webhook.rules.answer import fit_warning
from webhook.rules.launcher import Launcher, Slot
from webhook.rules.policy import LauncherPolicy, normalise_capability, permitted

Operation = dict[str, Any]


@functools.lru_cache(maxsize=256)
def escape(part: str) -> str:
    """One RFC 6901 reference token: `~` becomes `~0`, `/` becomes `~1` (resource names)."""
    return part.replace("~", "~0").replace("/", "~1")


def pointer(*parts: str | int) -> str:
    """An RFC 6901 JSON Pointer from unescaped parts."""
    return "".join("/" + escape(str(part)) for part in parts)


@dataclass(slots=True)
class Mutation:
    patch: list[Operation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Short facts for the audit log, e.g. "compute +devices.kubevirt.io/kvm".
    changes: list[str] = field(default_factory=list)

    def add(self, path: str, value: Any) -> None:
        self.patch.append({"op": "add", "path": path, "value": value})

    def replace(self, path: str, value: Any) -> None:
        self.patch.append({"op": "replace", "path": path, "value": value})

    def warn(self, text: str) -> None:
        """Warnings over 120 characters are refused by the API server's contract: shorten."""
        self.warnings.append(fit_warning(text))


def _request_devices(
    mutation: Mutation,
    base: str,
    compute: dict[str, Any],
    devices: tuple[catalogue.Device, ...],
) -> None:
    resources = compute.get("resources")
    wanted = {device.resource: "1" for device in devices}
    if not wanted:
        return
    before = len(mutation.patch)
    if resources is None:
        mutation.add(base + "/resources", {"limits": wanted, "requests": dict(wanted)})
    else:
        _request_in_sections(mutation, base, resources, wanted)
    if len(mutation.patch) > before:
        mutation.warn(f"compute now requests {', '.join(wanted)}: set by virtdev")
        mutation.changes.append(f"compute requests {', '.join(wanted)}")


def _request_in_sections(
    mutation: Mutation, base: str, resources: dict[str, Any], wanted: dict[str, str]
) -> None:
    # Only devices compute does not request yet reach here: KubeVirt's own counts stay as rendered.
    for section in ("limits", "requests"):
        current = resources.get(section)
        if current is None:
            mutation.add(base + "/resources/" + section, dict(wanted))
            continue
        for resource in wanted:
            if resource not in current:
                mutation.add(base + "/resources/" + section + "/" + escape(resource), "1")


def _restrict_privileges(mutation: Mutation, slot: Slot, *, required: tuple[str, ...]) -> None:
    """`privileged` off; keep every capability baseline, the release or the admin allows on this
    container, drop the rest, add `required`."""
    base, label = slot.pointer, slot.label
    security = slot.container.get("securityContext")
    if security is None:
        if required:
            mutation.add(base + "/securityContext", {"capabilities": {"add": list(required)}})
            mutation.changes.append(f"{label} capabilities.add={list(required)}")
        return
    if security.get("privileged") is True:
        mutation.replace(base + "/securityContext/privileged", False)
        reason = "devices come from virtdev" if slot.role == "compute" else "not allowed"
        mutation.warn(f"{label}: privileged: true removed, {reason}")
        mutation.changes.append(f"{label} privileged=false")

    capabilities = security.get("capabilities")
    current = list((capabilities or {}).get("add") or ())
    allowed = slot.capabilities
    # Pod Security compares names as spelt: an allowed one spelt otherwise (`chown`) is written
    # as Kubernetes spells it, so that /validate allows what /mutate kept.
    kept: dict[str, None] = {}
    removed, respelt = [], []
    for cap in dict.fromkeys(current):
        if cap in allowed:
            kept[cap] = None
        elif permitted(allowed, cap):
            kept[normalise_capability(cap)] = None
            respelt.append(cap)
        else:
            removed.append(cap)
    wanted = [*kept, *(cap for cap in required if cap not in kept)]
    if wanted == current:
        return
    if respelt:
        mutation.warn(f"{label}: capabilities written as Kubernetes spells them: {respelt[:8]}")
    if capabilities is None:
        mutation.add(base + "/securityContext/capabilities", {"add": wanted})
    elif capabilities.get("add") is None:
        mutation.add(base + "/securityContext/capabilities/add", wanted)
    else:
        mutation.replace(base + "/securityContext/capabilities/add", wanted)
    if removed:
        shown = ",".join(removed[:8]) + (
            f" and {len(removed) - 8} more" if len(removed) > 8 else ""
        )
        mutation.warn(f"{label}: removed capabilities not allowed: {shown}")
    mutation.changes.append(f"{label} capabilities.add={wanted[:16]}")


def mutate(
    launcher: Launcher,
    policy: LauncherPolicy,
    *,
    injected: tuple[catalogue.Device, ...] | None = None,
) -> Mutation:
    """The patch that lets a launcher run without `privileged`, and nothing more.

    A render that already runs unprivileged keeps every capability its release renders and
    every device request it makes; only what lies outside baseline, its profile and the admin's
    exceptions goes. A privileged compute is rewritten the way KubeVirt v0.7 did it: device
    requests (and NET_ADMIN up to v0.40) instead of `privileged`. `injected` is what compute is
    made to request (`launcher.injected` by default, as the policy and the pod say): the
    admission passes the list its scheduling decision was taken for, kvm withheld or not.
    """
    if injected is None:
        injected = launcher.injected
    mutation = Mutation()
    compute = launcher.compute
    privileged_compute = launcher.privileged
    if compute is None:
        # No devices to request; the privileges still go, or /validate would refuse the pod
        # that /mutate let through (validate(mutate(pod)) must allow every launcher pod).
        mutation.warn(
            f"launcher pod has no {policy.compute_container!r} container: no devices requested"
        )
    for slot in launcher.slots:
        required: tuple[str, ...] = ()
        if slot is compute:
            _request_devices(
                mutation,
                slot.pointer,
                slot.container,
                injected,
            )
            required = launcher.compute_requires
        _restrict_privileges(mutation, slot, required=required)
    if privileged_compute:
        _keep_selinux_domain(mutation, launcher)
    return mutation


def _keep_selinux_domain(mutation: Mutation, launcher: Launcher) -> None:
    """Give the pod the SELinux type its release runs unprivileged launchers in, where it sets
    none: a privileged container already ran as `spc_t`, and without it libvirt fails on
    SELinux hosts (why KubeVirt v0.7 set it when it dropped `privileged`)."""
    wanted = launcher.release.profile.selinux_type
    security = launcher.spec.get("securityContext")
    options = (security or {}).get("seLinuxOptions")
    if not wanted or (options or {}).get("type"):
        return
    if security is None:
        mutation.add("/spec/securityContext", {"seLinuxOptions": {"type": wanted}})
    elif options is None:
        mutation.add("/spec/securityContext/seLinuxOptions", {"type": wanted})
    elif "type" in options:
        mutation.replace("/spec/securityContext/seLinuxOptions/type", wanted)
    else:
        mutation.add("/spec/securityContext/seLinuxOptions/type", wanted)
    mutation.changes.append(f"pod seLinuxOptions.type={wanted}")
