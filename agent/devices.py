"""What a device is to the kubelet: its IDs, its health, the answers to Allocate.

Pure logic over the shared catalogue, no servers: the gRPC servicer is a thin layer over these
functions, and tests call them directly. Every ID of a resource stands for the same device node
(one `/dev/kvm` shared by every launcher pod), so there is one health value for all of them and
the Allocate answer does not depend on which IDs were picked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from virtdev.catalogue import Device

Health = Literal["Healthy", "Unhealthy"]
HEALTHY: Health = "Healthy"
UNHEALTHY: Health = "Unhealthy"

#: The kubelet refuses device IDs longer than a DNS label.
MAX_ID_LENGTH = 63
#: A bound on --device-count: far above any node's pod limit, far below gRPC's message limit.
MAX_DEVICE_COUNT = 10_000
#: How many unknown IDs a refusal names. The message travels in a gRPC trailer, which clients
#: cap (16 KiB by default: over it the kubelet sees RESOURCE_EXHAUSTED, not the refusal).
NAMED_IDS = 10


class AllocationError(ValueError):
    """A request the plugin cannot answer; the message is returned to the kubelet."""


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device node for a container: the wire `DeviceSpec`, as plain data."""

    container_path: str
    host_path: str
    permissions: str


def device_ids(device: Device, count: int) -> tuple[str, ...]:
    """`kvm-000` … `kvm-999`: deterministic, so the kubelet's checkpointed IDs stay valid
    across agent restarts, and an index keeps its ID whatever the count."""
    if not 1 <= count <= MAX_DEVICE_COUNT:
        raise ValueError(f"device count must be between 1 and {MAX_DEVICE_COUNT}, got {count}")
    ids = tuple(f"{device.name}-{index:03d}" for index in range(count))
    if len(ids[-1]) > MAX_ID_LENGTH:
        raise ValueError(f"device IDs of {device.name} would exceed {MAX_ID_LENGTH} characters")
    return ids


def host_node(device: Device, host_root: str) -> str:
    """Where the agent looks for the device node: under --host-root, which may not be `/`."""
    return os.path.join(host_root, device.path.lstrip("/"))


def node_health(path: str) -> Health:
    """Healthy when the node exists and is a character device (a plain file is no device)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return UNHEALTHY
    return HEALTHY if stat.S_ISCHR(mode) else UNHEALTHY


def allocate(
    device: Device, known_ids: frozenset[str], requested: Sequence[str], *, permissions: str
) -> DeviceSpec:
    """The answer for one container: the node at the same path inside as on the host, with the
    node's permissions (`agent.cgroups.device_permissions`).

    Whatever IDs were picked, the container gets the one node once; IDs this plugin never
    advertised are refused, so a kubelet checkpoint from another configuration is noticed.
    """
    if not requested:
        raise AllocationError(f"container request for {device.resource} names no device IDs")
    unknown = sorted(set(requested) - known_ids)
    if unknown:
        raise AllocationError(f"unknown device IDs for {device.resource}: {_named(unknown)}")
    return DeviceSpec(container_path=device.path, host_path=device.path, permissions=permissions)


def _named(ids: Sequence[str]) -> str:
    """The first few IDs, each cut to a device ID's length, and how many more there are."""
    shown = [i if len(i) <= MAX_ID_LENGTH else f"{i[:MAX_ID_LENGTH]}..." for i in ids[:NAMED_IDS]]
    more = len(ids) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def preferred_allocation(
    ordered_ids: Sequence[str],
    *,
    available: Iterable[str],
    must_include: Sequence[str],
    size: int,
) -> list[str]:
    """Which IDs to allocate: every must-include ID, then the lowest available ones up to size.

    The IDs are interchangeable, so the lowest-numbered first keeps allocations compact and
    deterministic; IDs outside `available` are never proposed.
    """
    if size < 0:
        raise AllocationError(f"allocation size must not be negative, got {size}")
    chosen = list(dict.fromkeys(must_include))
    if len(chosen) >= size:
        return chosen
    pool = set(available) - set(chosen)
    for device_id in ordered_ids:
        if len(chosen) == size:
            break
        if device_id in pool:
            chosen.append(device_id)
    return chosen
