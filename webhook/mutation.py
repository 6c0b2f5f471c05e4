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
from webhook.policy import (
    LauncherPolicy,
    added_capabilities,
    containers,
    find_compute,
    normalise_capability,
    runs_emulated,
)
from webhook.review import fit_warning

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


def _is_one(quantity: Any) -> bool:
    return quantity == "1" or (type(quantity) is int and quantity == 1)


def wanted_devices(
    compute: dict[str, Any], policy: LauncherPolicy, *, emulate: bool = False
) -> tuple[catalogue.Device, ...]:
    """The devices compute should request: without kvm when the VM runs emulated."""
    if emulate or policy.emulation or runs_emulated(compute):
        return tuple(d for d in policy.devices if d.name != catalogue.ACCELERATOR)
    return policy.devices


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
    for section in ("limits", "requests"):
        current = resources.get(section)
        if current is None:
            mutation.add(base + "/resources/" + section, dict(wanted))
            continue
        for resource in wanted:
            if resource not in current:
                mutation.add(base + "/resources/" + section + "/" + escape(resource), "1")
            elif not _is_one(current[resource]):
                mutation.replace(base + "/resources/" + section + "/" + escape(resource), "1")
                mutation.warn(
                    f"compute {section}[{resource}] was {str(current[resource])[:16]!r}, set to '1'"
                )


def _restrict_privileges(
    mutation: Mutation,
    base: str,
    container: dict[str, Any],
    policy: LauncherPolicy,
    *,
    required: tuple[str, ...],
    label: str,
) -> None:
    """Make `privileged` false and keep only permitted added capabilities, plus `required`."""
    security = container.get("securityContext")
    if security is None:
        if required:
            mutation.add(
                base + "/securityContext",
                {"privileged": False, "capabilities": {"add": list(required)}},
            )
            mutation.changes.append(f"{label} privileged=false, capabilities.add={list(required)}")
        return
    if security.get("privileged") is True:
        mutation.replace(base + "/securityContext/privileged", False)
        mutation.warn(f"{label}: privileged: true removed; devices come from virtdev")
        mutation.changes.append(f"{label} privileged=false")
    elif security.get("privileged") is None and required:
        mutation.add(base + "/securityContext/privileged", False)

    capabilities = security.get("capabilities")
    current = added_capabilities(container)
    kept = [cap for cap in dict.fromkeys(current) if policy.is_permitted(cap)]
    have = {normalise_capability(cap) for cap in kept}
    wanted = kept + [cap for cap in required if cap not in have]
    if wanted == current:
        return
    removed = [cap for cap in current if not policy.is_permitted(cap)]
    if capabilities is None:
        mutation.add(base + "/securityContext/capabilities", {"add": wanted})
    elif capabilities.get("add") is None:
        mutation.add(base + "/securityContext/capabilities/add", wanted)
    else:
        mutation.replace(base + "/securityContext/capabilities/add", wanted)
    if removed:
        mutation.warn(f"{label}: removed capabilities not permitted: {','.join(removed)}")
    mutation.changes.append(f"{label} capabilities.add={wanted}")


def mutate(pod: dict[str, Any], policy: LauncherPolicy, *, emulate: bool = False) -> Mutation:
    """The patch that makes a launcher pod request its devices instead of running privileged.

    `pod` has passed the shape checks of `admission.as_pod`. `emulate` withholds kvm on top of what
    the policy and the pod itself say (the scheduler-aware policy uses it).
    """
    mutation = Mutation()
    spec = pod.get("spec") or {}
    compute_index = find_compute(spec, policy.compute_container)
    if compute_index is None:
        # No devices to request; the privileges still go, or /validate would refuse the pod
        # that /mutate let through (validate(mutate(pod)) must allow every launcher pod).
        mutation.warn(
            f"launcher pod has no {policy.compute_container!r} container: no devices requested"
        )

    for list_field, index, container in containers(spec):
        base = f"/spec/{list_field}/{index}"  # JSON Pointer of the container; no escaping needed
        is_compute = list_field == "containers" and index == compute_index
        name = container.get("name") or f"{list_field}[{index}]"
        if is_compute:
            devices = wanted_devices(container, policy, emulate=emulate)
            _request_devices(mutation, base, container, devices)
        _restrict_privileges(
            mutation,
            base,
            container,
            policy,
            required=policy.required_capabilities if is_compute else (),
            label=str(name)[:40],
        )
    return mutation
