"""A pod read once: everything the rules ask of it, worked out before any rule runs.

`read_launcher` (a launcher pod) and `read_pod` (any other, for /guard, or a launcher-labelled
pod from anyone but KubeVirt's controller) build one `Launcher` value per object of a review:
the release that judges it and why, each container's role and the capabilities it may add,
compute, whether the VM runs emulated, the devices /mutate injects into compute, and the
requester's standing. Mutation, validation and the scheduling decision read this value and
never go back to the raw pod for a derived fact: a review finds compute once, picks the
profile once and works out the devices once. Pure: the pod has passed the shape checks of
`webhook.admission`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from virtdev import catalogue
from webhook.rules import baseline, profiles
from webhook.rules.policy import LauncherPolicy
from webhook.rules.profiles import Profile, Role, Version

_DOMAIN = catalogue.RESOURCE_DOMAIN + "/"


@dataclass(frozen=True, slots=True)
class Release:
    """The profile that judges a launcher and why it was chosen (for the audit annotation)."""

    profile: Profile
    why: str

    def describe(self, baseline: str = "") -> str:
        """`KubeVirt v0.20 profile on Pod Security baseline v1.37, image tag v0.20`: what judged
        the pod (and on which baseline version, where given) and why."""
        if self.profile is profiles.BASELINE:
            return f"{self.profile.name}{' ' + baseline if baseline else ''}, {self.why}"
        on = f" on Pod Security baseline {baseline}" if baseline else ""
        return f"KubeVirt {self.profile.name} profile{on}, {self.why}"


#: Pods that are not launchers get baseline and nothing more.
NOT_A_LAUNCHER = Release(profiles.BASELINE, "not a launcher pod")
#: Usernames in messages are the API server's, but a message stays a message.
_MAX_NAME = 253


def requester_name(username: str) -> str:
    """The requester as messages name it (the API server may send none)."""
    return username[:_MAX_NAME] or "a requester the API server did not name"


def untrusted(what: str, username: str) -> str:
    """Why a launcher- or hotplug-labelled pod gets no release exceptions: who asked."""
    return f"{what} label, but created by {requester_name(username)}, not by KubeVirt's controller"


def requester_annotation(name: str) -> str:
    """The `requester` audit annotation of a pod the rules took for another's than KubeVirt's
    controller, named as `requester_name` names them (as PSA's `exempt` says which exemption
    applied)."""
    return f"other: {name}"


# Slot and Launcher are not frozen, though nothing changes them once read (`dataclasses.replace`
# makes the changed copies): a frozen dataclass sets each field through object.__setattr__,
# which cost a fifth of the rules' instructions per /mutate (bench/webhook_instructions.py).
@dataclass(slots=True)
class Slot:
    """One container of the pod, where it sits, what KubeVirt renders it for and may hold."""

    list_field: str
    index: int
    container: dict[str, Any]
    role: Role
    #: Every capability it may add, in Kubernetes' spelling: baseline's, its release's for its
    #: role, the admin's, NET_ADMIN on compute where granted; baseline's alone when untrusted.
    capabilities: frozenset[str]
    #: False for a container an UPDATE by anyone but KubeVirt's controller added or changed:
    #: it gets no launcher exception and may not mount the pod's hostPath volumes.
    trusted: bool
    #: Its JSON Pointer (list fields and indices need no escaping), its field path as `kubectl
    #: explain` spells it and its name in messages, worked out as it is read: /mutate writes the
    #: pointer and the label of each container it changes, /validate the path of each it checks.
    pointer: str
    path: str
    label: str


@dataclass(slots=True)
class Launcher:
    pod: dict[str, Any]
    spec: dict[str, Any]
    release: Release
    slots: tuple[Slot, ...]
    compute: Slot | None
    #: Compute runs its VM without a hypervisor device: KubeVirt rendered it for software
    #: emulation (`--allow-emulation`/`--use-emulation`), or the admin's `--emulation` says so.
    emulated: bool = False
    #: Compute runs `privileged` (a render /mutate rewrites into device requests).
    privileged: bool = False
    #: Compute asks for kvm or mshv itself: a device-plugin-aware KubeVirt rendered it.
    requests_hypervisor: bool = False
    #: What /mutate adds to compute (`injected_devices`).
    injected: tuple[catalogue.Device, ...] = ()
    #: The capabilities compute must hold once /mutate is done: NET_ADMIN where its release
    #: renders it, or where a privileged render loses `privileged` and the release grants it.
    compute_requires: tuple[str, ...] = ()
    #: Who grants the pod's exceptions, as messages name it: `KubeVirt v1.7+`, or "" where its
    #: release is baseline (every container /validate checks names it).
    exceptions: str = ""
    #: A KubeVirt hotplug attachment pod (judged by /guard, by its release).
    hotplug: bool = False
    #: Who added or changed the untrusted slots (for messages); "" when no requester did.
    changed_by: str = ""
    #: The uid of the VMI KubeVirt rendered it for (its `created-by` label as admitted).
    vmi: str = ""
    #: The requester's standing: "" where the rules take the pod for KubeVirt's (or it claims
    #: nothing); else whose launcher- or hotplug-labelled pod it is, as messages name them.
    other_requester: str = ""

    @property
    def injected_without_kvm(self) -> tuple[catalogue.Device, ...]:
        """What compute requests when the scheduling decision withholds kvm (no node has it)."""
        return tuple(d for d in self.injected if d.name != catalogue.ACCELERATOR)


def injected_devices(
    compute: dict[str, Any],
    profile: Profile,
    policy: LauncherPolicy,
    *,
    privileged: bool,
    emulated: bool,
    requests_hypervisor: bool,
) -> tuple[catalogue.Device, ...]:
    """What /mutate adds to compute: the policy's devices, only where KubeVirt requested none
    (<= v0.6, or a privileged render that loses `privileged`), never kvm when emulated, never
    one it already requests."""
    if requests_hypervisor or (profile.requests_devices and not privileged):
        return ()
    # Requested in limits and requests both: one in a single section is completed.
    have = _device_resources(compute, both=True)
    return tuple(
        device
        for device in policy.devices
        if device.resource not in have and not (emulated and device.name == catalogue.ACCELERATOR)
    )


def grants_net_admin(profile: Profile) -> bool:
    """Whether compute may hold NET_ADMIN: where the release renders it (its network set up in
    the launcher, to v0.40), and <= v0.6, whose privileged compute /mutate rewrites as v0.7
    rendered it. Never from v0.41 on, whatever a pod adds."""
    return profile.needs_net_admin or not profile.requests_devices


@functools.lru_cache(maxsize=256)
def _allowed(since: Version, role: Role, permitted: frozenset[str]) -> frozenset[str]:
    profile = profiles.profile_for(since)
    extra = {catalogue.NET_ADMIN} if role == "compute" and grants_net_admin(profile) else set()
    return baseline.CAPABILITIES | profile.capabilities.get(role, frozenset()) | permitted | extra


def allowed_capabilities(profile: Profile, role: Role, policy: LauncherPolicy) -> frozenset[str]:
    """Every capability a container of this role may add, in Kubernetes' spelling."""
    if profile is profiles.BASELINE:  # not a launcher: none of the launcher exceptions
        return baseline.CAPABILITIES
    return _allowed(profile.since, role, policy.permitted_capabilities)


def role_of(list_field: str, container: dict[str, Any], compute_container: str) -> Role:
    """The role KubeVirt renders a container for, by the names it gives them."""
    if list_field == "ephemeralContainers":  # `kubectl debug`: KubeVirt never renders these
        return "unknown"
    name = container.get("name") or ""
    if list_field == "containers" and name == compute_container:
        return "compute"
    if name.startswith("virtiofs-"):
        return "virtiofs"
    if name.startswith("hook-sidecar-"):
        return "hook-sidecar"
    if name == "guest-console-log":
        return "guest-console-log"
    if name.startswith(("volume", "kernel-boot")) or name == "container-disk-binary":
        return "container-disk"
    return "unknown"


def choose_release(container: dict[str, Any] | None, policy: LauncherPolicy) -> Release:
    """The profile of `--kubevirt-version`, or of the release KubeVirt's own container names in
    its image (compute's, or a hotplug pod's one container): never another container's, which
    a `kubectl debug` or a containerDisk may pick."""
    if policy.kubevirt_version is not None:
        major, minor = policy.kubevirt_version
        return Release(
            profiles.profile_for(policy.kubevirt_version), f"--kubevirt-version v{major}.{minor}"
        )
    image = container.get("image") if container is not None else None
    if isinstance(image, str):
        version = profiles.release_from_image(image)
        if version is not None:
            profile = profiles.profile_for(version)
            why = f"image tag v{version[0]}.{version[1]}"
            if version > profile.since and profile is profiles.newest():
                why += ", newer than the newest known profile"
            return Release(profile, why)
        if profiles.is_launcher_image(image):
            return Release(profiles.newest(), "the newest, image pinned by digest or untagged")
    return Release(profiles.newest(), "the newest, no virt-launcher image tag")


CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Every container of a pod spec as (list field, index, container), as PSA examines them."""
    for list_field in CONTAINER_LISTS:
        for index, container in enumerate(spec.get(list_field) or ()):
            if container is not None:
                yield list_field, index, container


_EMULATION_FLAGS = frozenset(catalogue.EMULATION_ARGS)


def runs_emulated(container: dict[str, Any]) -> bool:
    """KubeVirt renders software-emulated launchers with these arguments to virt-launcher."""
    # Set lookups in C: a launcher's command line has a dozen words, on every admission.
    return not (
        _EMULATION_FLAGS.isdisjoint(container.get("command") or ())
        and _EMULATION_FLAGS.isdisjoint(container.get("args") or ())
    )


def _device_resources(container: dict[str, Any], *, both: bool = False) -> set[str]:
    """The `devices.kubevirt.io/*` resources in the container's limits or requests (`both`:
    in each of them)."""
    resources = container.get("resources")
    if not resources:
        return set()
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    if both:
        return {name for name in limits if name in requests and name.startswith(_DOMAIN)}
    names = {name for name in limits if name.startswith(_DOMAIN)}
    names.update(name for name in requests if name.startswith(_DOMAIN))
    return names


def _slot(
    list_field: str,
    index: int,
    container: dict[str, Any],
    role: Role,
    profile: Profile,
    policy: LauncherPolicy,
) -> Slot:
    """Ephemeral containers are never KubeVirt's (`kubectl debug` adds them): baseline's
    capabilities alone, whoever asks."""
    trusted = list_field != "ephemeralContainers"
    return Slot(
        list_field,
        index,
        container,
        role,
        allowed_capabilities(profile, role, policy) if trusted else baseline.CAPABILITIES,
        trusted,
        f"/spec/{list_field}/{index}",
        f"spec.{list_field}[{index}]",
        str(container.get("name") or f"{list_field}[{index}]")[:40],
    )


def _compute_container(spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The first container of `containers` by compute's name: KubeVirt renders it there."""
    for container in spec.get("containers") or ():
        if container is not None and (container.get("name") or "") == name:
            return container  # type: ignore[no-any-return]
    return None


def read_launcher(
    pod: dict[str, Any],
    policy: LauncherPolicy,
    *,
    release: Release | None = None,
    vmi: str | None = None,
) -> Launcher:
    """Read the pod once, as KubeVirt's controller's; `release` and `vmi` judge it as the pod
    was admitted (an UPDATE's new object by its old one's: a label edit changes neither).

    Ephemeral containers are never KubeVirt's (`kubectl debug` adds them): they get no
    launcher exception whoever asks, so the audit of a running pod judges them so too."""
    spec = pod.get("spec") or {}
    compute_container = _compute_container(spec, policy.compute_container)
    release = release or choose_release(compute_container, policy)
    profile = release.profile
    slots = []
    compute = None
    for list_field, index, container in containers(spec):
        role = role_of(list_field, container, policy.compute_container)
        if role == "compute" and (compute is not None or container is not compute_container):
            role = "unknown"  # a second container of that name is not KubeVirt's
        slot = _slot(list_field, index, container, role, profile, policy)
        if role == "compute":
            compute = slot
        slots.append(slot)
    vmi = _created_by(pod) if vmi is None else vmi
    granter = profiles.GRANTERS.get(profile.since, "")
    if compute is None:
        return Launcher(pod, spec, release, tuple(slots), None, exceptions=granter, vmi=vmi)
    security = compute.container.get("securityContext")
    privileged = security is not None and security.get("privileged") is True
    emulated = policy.emulation or runs_emulated(compute.container)
    hypervisor = not catalogue.HYPERVISOR_RESOURCES.isdisjoint(_device_resources(compute.container))
    net_admin = (privileged or profile.needs_net_admin) and grants_net_admin(profile)
    return Launcher(
        pod,
        spec,
        release,
        tuple(slots),
        compute,
        emulated=emulated,
        privileged=privileged,
        requests_hypervisor=hypervisor,
        injected=injected_devices(
            compute.container,
            profile,
            policy,
            privileged=privileged,
            emulated=emulated,
            requests_hypervisor=hypervisor,
        ),
        compute_requires=(catalogue.NET_ADMIN,) if net_admin else (),
        exceptions=granter,
        vmi=vmi,
    )


def _created_by(pod: dict[str, Any]) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    value = labels.get(catalogue.CREATED_BY_LABEL)
    return value if isinstance(value, str) else ""


def is_hotplug(pod: dict[str, Any] | None) -> bool:
    """KubeVirt labels its hotplug attachment pods `kubevirt.io=hotplug-disk`, whatever
    `--launcher-selector` says of launchers."""
    labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
    return bool(labels.get(catalogue.LAUNCHER_LABEL_KEY) == catalogue.HOTPLUG_LABEL_VALUE)


def read_pod(
    pod: dict[str, Any],
    policy: LauncherPolicy,
    *,
    release: Release | None = None,
    other_requester: str = "",
) -> Launcher:
    """Any other pod, for /guard: every container of role "unknown", judged by baseline alone —
    but for KubeVirt's hotplug attachment pods, which their release renders (the launcher's
    image, its SELinux type, the host's network in v0.36 - v0.46), when `release` says so:
    the caller has checked who asked (`admission`). A launcher-labelled pod from anyone but
    KubeVirt's controller is read so too, with `release` naming why it gets baseline alone and
    `other_requester` whose it is."""
    spec = pod.get("spec") or {}
    release = release or NOT_A_LAUNCHER
    slots = tuple(
        _slot(field, index, container, "unknown", release.profile, policy)
        for field, index, container in containers(spec)
    )
    granter = profiles.GRANTERS.get(release.profile.since, "")
    return Launcher(
        pod,
        spec,
        release,
        slots,
        None,
        exceptions=granter,
        hotplug=granter != "",
        other_requester=other_requester,
    )


def hotplug_release(pod: dict[str, Any], policy: LauncherPolicy) -> Release:
    """A hotplug attachment pod's release: from its one container, which runs the launcher's
    image (`T@v1.9.0:1077-1209`)."""
    first = next(iter((pod.get("spec") or {}).get("containers") or ()), None)
    return choose_release(first if isinstance(first, dict) else None, policy)


def with_changes_untrusted(
    launcher: Launcher, old: Launcher, username: str, *, labelled: bool
) -> Launcher:
    """The launcher after an UPDATE from anyone but KubeVirt's controller: every container it
    added, or whose image it changed, loses the launcher exceptions (`kubectl set image`,
    `kubectl debug`); the rest keep what they were admitted with. A `labelled` pod (launcher or
    hotplug) with such a container is then another's: a tenant's label edit is not."""
    before = {(slot.list_field, slot.container.get("name")): slot.container for slot in old.slots}
    slots = []
    changed = False
    for slot in launcher.slots:
        previous = before.get((slot.list_field, slot.container.get("name")))
        if previous is None or previous.get("image") != slot.container.get("image"):
            slot = replace(slot, trusted=False, capabilities=baseline.CAPABILITIES)
            changed = True
        slots.append(slot)
    if not changed:
        return launcher
    return replace(
        launcher,
        slots=tuple(slots),
        changed_by=username[:_MAX_NAME] or "?",
        other_requester=requester_name(username) if labelled else "",
    )
