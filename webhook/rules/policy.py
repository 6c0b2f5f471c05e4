"""The admin's launcher policy: how a launcher is recognised and what the admin allows on top.

Built once from flags/config (`LauncherPolicy.from_flags`, called by
`webhook.cli.launcher_policy`), then handed to the pure rules. What a launcher may hold by
default is Pod Security baseline (`webhook.rules.baseline`) plus what its KubeVirt release renders
(`webhook.rules.profiles`); this adds only the admin's own exceptions. The devices come from
`virtdev.catalogue`, so the webhook injects exactly what the agent serves.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from virtdev import catalogue
from virtdev.catalogue import Device
from webhook.rules import baseline
from webhook.rules.baseline import Baseline
from webhook.rules.profiles import Version, parse_version


def normalise_capability(name: str) -> str:
    """`cap_net_admin` and `NET_ADMIN` name the same capability; compare in Kubernetes' spelling.

    Only ASCII is folded: Python's `upper()` maps e.g. the dotless `ı` to `I`, which would let
    a spelling the runtime does not know pass for a permitted capability.
    """
    text = name.strip()
    return (text.upper() if text.isascii() else text).removeprefix("CAP_")


def permitted(allowed: frozenset[str], capability: str) -> bool:
    """Whether `allowed` holds the capability, however it is spelt (`cap_sys_nice`)."""
    # Most spellings are already Kubernetes' own: one set lookup, then normalise.
    return capability in allowed or normalise_capability(capability) in allowed


@dataclass(frozen=True, slots=True)
class LauncherPolicy:
    """The admin's settings; what each KubeVirt release needs comes from
    `webhook.rules.profiles`."""

    label_key: str = catalogue.LAUNCHER_LABEL_KEY
    label_value: str = catalogue.LAUNCHER_LABEL_VALUE
    compute_container: str = catalogue.COMPUTE_CONTAINER
    #: What virtdev makes compute request where KubeVirt requests no devices itself (<= v0.6).
    devices: tuple[Device, ...] = field(
        default_factory=lambda: catalogue.resolve_devices(catalogue.DEFAULT_DEVICES)
    )
    #: The KubeVirt release whose profile judges every launcher; None reads it from the image.
    kubevirt_version: Version | None = None
    #: Capabilities any launcher container may add beyond baseline and its release's profile.
    permitted_capabilities: frozenset[str] = frozenset()
    #: hostPath prefixes launchers may mount beyond their release's own (e.g. hostDisk dirs).
    permitted_host_paths: tuple[str, ...] = ()
    #: SELinux types KubeVirt is configured to render (`selinuxLauncherType`).
    selinux_types: frozenset[str] = frozenset()
    emulation: bool = False
    #: Who may create launcher and hotplug pods with their release's exceptions
    #: (`request.userInfo.username`); anyone else's are judged as any pod.
    kubevirt_controllers: tuple[str, ...] = catalogue.KUBEVIRT_CONTROLLERS
    #: The Pod Security baseline version every pod is judged by (`--baseline-version`).
    baseline: Baseline = baseline.DEFAULT

    def __post_init__(self) -> None:
        permitted = frozenset(map(normalise_capability, self.permitted_capabilities))
        object.__setattr__(self, "permitted_capabilities", permitted)
        paths = tuple(dict.fromkeys(normalise_host_path(p) for p in self.permitted_host_paths))
        object.__setattr__(self, "permitted_host_paths", paths)

    @classmethod
    def from_flags(
        cls,
        *,
        launcher_selector: str = catalogue.LAUNCHER_SELECTOR,
        compute_container: str = catalogue.COMPUTE_CONTAINER,
        devices: Sequence[str] = catalogue.DEFAULT_DEVICES,
        kubevirt_version: str = "auto",
        permitted_capabilities: Iterable[str] = (),
        permitted_host_paths: Iterable[str] = (),
        selinux_launcher_types: Iterable[str] = (),
        emulation: bool = False,
        kubevirt_controllers: Iterable[str] = catalogue.KUBEVIRT_CONTROLLERS,
        baseline_version: str = "latest",
    ) -> LauncherPolicy:
        """The policy as the flags (and config keys) spell it; a bad value is a ValueError
        naming its flag."""
        key, sep, value = launcher_selector.partition("=")
        if not sep or not key:
            raise ValueError(
                f"--launcher-selector {launcher_selector!r}: expected KEY=VALUE, "
                f"e.g. {catalogue.LAUNCHER_SELECTOR}"
            )
        version = None
        if kubevirt_version != "auto":
            version = parse_version(kubevirt_version)
            if version is None:
                raise ValueError(
                    f"--kubevirt-version {kubevirt_version!r}: expected auto or vX.Y[.Z]"
                )
        controllers = tuple(dict.fromkeys(n.strip() for n in kubevirt_controllers if n.strip()))
        if not controllers:
            raise ValueError(
                "--kubevirt-controllers: expected at least one username, e.g. "
                f"{catalogue.KUBEVIRT_CONTROLLERS[0]}"
            )
        paths = tuple(permitted_host_paths)
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"--permitted-host-paths {path!r}: expected an absolute path")
        return cls(
            label_key=key,
            label_value=value,
            compute_container=compute_container,
            devices=catalogue.resolve_devices(tuple(devices)),
            kubevirt_version=version,
            permitted_capabilities=frozenset(permitted_capabilities),
            permitted_host_paths=paths,
            selinux_types=frozenset(selinux_launcher_types),
            emulation=emulation,
            kubevirt_controllers=controllers,
            baseline=baseline.parse_version(baseline_version),
        )

    def trusts(self, username: str) -> bool:
        """Whether the API server says this requester is KubeVirt's controller."""
        return username in self.kubevirt_controllers

    @property
    def controller(self) -> str:
        """The requester offline tools speak for by default (`--as`): the first one listed."""
        return self.kubevirt_controllers[0]

    def is_launcher(self, obj: dict[str, Any] | None) -> bool:
        labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
        return bool(labels.get(self.label_key) == self.label_value)

    def host_path_permitted(self, path: str) -> bool:
        """Under one of the admin's prefixes, compared path component by component."""
        normal = normalise_host_path(path)
        return any(
            normal == prefix or normal.startswith(prefix.rstrip("/") + "/")
            for prefix in self.permitted_host_paths
        )


def normalise_host_path(path: str) -> str:
    """`/data/../etc/` is `/etc`: the kubelet mounts what the host resolves, so compare that."""
    if not path:
        return path
    normal = posixpath.normpath(path)
    # POSIX lets `//x` differ from `/x`; Linux does not, and neither may the comparison.
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal
