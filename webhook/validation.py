"""What /validate refuses in a launcher pod, as a pure function from pod to violations.

Validating webhooks run after every mutation, so this sees the pod as it will be stored: if
anything put `privileged` back, or the pod was created while the mutator was unreachable
(`failurePolicy: Ignore`), it is caught here. Namespaces running launchers need PSA level
`privileged` for NET_ADMIN, so PSA enforces nothing there: this is the only guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtdev import catalogue
from webhook.mutation import wanted_devices
from webhook.policy import LauncherPolicy, added_capabilities, containers, find_compute
from webhook.review import MAX_WARNING

HOST_NAMESPACES = ("hostPID", "hostIPC", "hostNetwork")


@dataclass(frozen=True, slots=True)
class Violation:
    #: Where, as `kubectl explain` would spell it: `spec.initContainers[0].securityContext...`.
    path: str
    message: str
    #: What the violation is, independent of list positions, to compare a pod with its old self.
    key: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def violations(pod: dict[str, Any], policy: LauncherPolicy) -> list[Violation]:
    """Every reason to refuse this launcher pod; empty when it may run."""
    spec = pod.get("spec") or {}
    found: list[Violation] = []
    for name in HOST_NAMESPACES:
        if spec.get(name) is True:
            found.append(
                Violation(
                    f"spec.{name}", "host namespaces are not allowed in launcher pods", (name,)
                )
            )
    for list_field, index, container in containers(spec):
        where = f"spec.{list_field}[{index}].securityContext"
        name = str(container.get("name"))
        security = container.get("securityContext") or {}
        if security.get("privileged") is True:
            found.append(
                Violation(
                    f"{where}.privileged",
                    "privileged containers are not allowed in launcher pods "
                    "(virtdev provides /dev/kvm and /dev/net/tun as devices)",
                    (list_field, name, "privileged"),
                )
            )
        for cap_index, capability in enumerate(added_capabilities(container)):
            if not policy.is_permitted(capability):
                permitted = ", ".join(sorted(policy.permitted_capabilities)) or "none"
                found.append(
                    Violation(
                        f"{where}.capabilities.add[{cap_index}]",
                        f"capability {capability} is not permitted (permitted: {permitted})",
                        (list_field, name, "capability", capability),
                    )
                )
    return found


def new_violations(
    pod: dict[str, Any], old_pod: dict[str, Any] | None, policy: LauncherPolicy
) -> list[Violation]:
    """On UPDATE, only what the change introduces: old launchers must stay updatable."""
    current = violations(pod, policy)
    if old_pod is None:
        return current
    before = {violation.key for violation in violations(old_pod, policy)}
    return [violation for violation in current if violation.key not in before]


def device_warnings(pod: dict[str, Any], policy: LauncherPolicy) -> list[str]:
    """A compute container that requests no devices will not find /dev/kvm: allowed, but said."""
    spec = pod.get("spec") or {}
    index = find_compute(spec, policy.compute_container)
    if index is None:
        return []
    compute = spec["containers"][index]
    limits = (compute.get("resources") or {}).get("limits") or {}
    missing = [d.resource for d in wanted_devices(compute, policy) if d.resource not in limits]
    if not missing:
        return []
    text = f"spec.containers[{index}] does not request {', '.join(missing)}"
    if catalogue.ACCELERATOR in {name.rpartition("/")[2] for name in missing}:
        text += "; the VM may lack KVM"
    return [text[:MAX_WARNING]]
