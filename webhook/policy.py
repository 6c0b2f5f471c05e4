"""What a virt-launcher pod is, what it must request and which privileges it may keep.

Built once from flags/config (`LauncherPolicy.from_args`), then handed to the pure rules. The
defaults come from `virtdev.catalogue`, so the webhook injects exactly what the agent serves.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from virtdev import catalogue
from virtdev.catalogue import Device

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def normalise_capability(name: str) -> str:
    """`cap_net_admin` and `NET_ADMIN` name the same capability; compare in Kubernetes' spelling.

    Only ASCII is folded: Python's `upper()` maps e.g. the dotless `ı` to `I`, which would let
    a spelling the runtime does not know pass for a permitted capability.
    """
    text = name.strip()
    return (text.upper() if text.isascii() else text).removeprefix("CAP_")


@dataclass(frozen=True, slots=True)
class LauncherPolicy:
    label_key: str = catalogue.LAUNCHER_LABEL_KEY
    label_value: str = catalogue.LAUNCHER_LABEL_VALUE
    compute_container: str = catalogue.COMPUTE_CONTAINER
    devices: tuple[Device, ...] = field(
        default_factory=lambda: catalogue.resolve_devices(catalogue.DEFAULT_DEVICES)
    )
    required_capabilities: tuple[str, ...] = catalogue.REQUIRED_CAPABILITIES
    # What any launcher container may add. The required ones are always permitted, or the
    # validator would deny what the mutator just added.
    permitted_capabilities: frozenset[str] = frozenset(catalogue.PERMITTED_CAPABILITIES)
    emulation: bool = False

    def __post_init__(self) -> None:
        required = tuple(dict.fromkeys(map(normalise_capability, self.required_capabilities)))
        permitted = frozenset(map(normalise_capability, self.permitted_capabilities))
        object.__setattr__(self, "required_capabilities", required)
        object.__setattr__(self, "permitted_capabilities", permitted | frozenset(required))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LauncherPolicy:
        key, sep, value = str(args.launcher_selector).partition("=")
        if not sep or not key:
            raise ValueError(
                f"--launcher-selector {args.launcher_selector!r}: expected KEY=VALUE, "
                f"e.g. {catalogue.LAUNCHER_SELECTOR}"
            )
        return cls(
            label_key=key,
            label_value=value,
            compute_container=args.compute_container,
            devices=catalogue.resolve_devices(args.devices),
            required_capabilities=tuple(args.required_capabilities),
            permitted_capabilities=frozenset(args.permitted_capabilities),
            emulation=bool(args.emulation),
        )

    def is_launcher(self, obj: dict[str, Any] | None) -> bool:
        labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
        return bool(labels.get(self.label_key) == self.label_value)

    def is_permitted(self, capability: str) -> bool:
        return normalise_capability(capability) in self.permitted_capabilities


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Every container of a pod spec as (list field, index, container), as PSA examines them."""
    for list_field in CONTAINER_LISTS:
        for index, container in enumerate(spec.get(list_field) or ()):
            if container is not None:
                yield list_field, index, container


def find_compute(spec: dict[str, Any], name: str) -> int | None:
    for index, container in enumerate(spec.get("containers") or ()):
        if container is not None and container.get("name") == name:
            return index
    return None


_EMULATION_FLAGS = frozenset(catalogue.EMULATION_ARGS)


def runs_emulated(container: dict[str, Any]) -> bool:
    """KubeVirt renders software-emulated launchers with these arguments to virt-launcher."""
    # Set lookups in C: a launcher's command line has a dozen words, on every admission.
    return not (
        _EMULATION_FLAGS.isdisjoint(container.get("command") or ())
        and _EMULATION_FLAGS.isdisjoint(container.get("args") or ())
    )


def added_capabilities(container: dict[str, Any]) -> list[str]:
    security = container.get("securityContext") or {}
    return list((security.get("capabilities") or {}).get("add") or ())
