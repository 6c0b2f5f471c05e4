"""The pure device logic: IDs, health, the Allocate answer, preferred allocation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import devices
from tests.agent.helpers import make_node
from virtdev import catalogue

KVM = catalogue.DEVICES["kvm"]


def test_ids_are_distinct_short_and_the_same_every_time() -> None:
    ids = devices.device_ids(KVM, catalogue.DEFAULT_DEVICE_COUNT)
    assert len(set(ids)) == 1000
    assert ids[0] == "kvm-000" and ids[-1] == "kvm-999"
    assert ids == devices.device_ids(KVM, catalogue.DEFAULT_DEVICE_COUNT)
    assert all(len(i) <= devices.MAX_ID_LENGTH for i in ids)


def test_an_index_keeps_its_id_whatever_the_count() -> None:
    assert devices.device_ids(KVM, 5) == devices.device_ids(KVM, 2000)[:5]
    assert devices.device_ids(KVM, 2000)[1500] == "kvm-1500"


@pytest.mark.parametrize("count", [0, -1, devices.MAX_DEVICE_COUNT + 1])
def test_a_count_out_of_range_is_a_clear_error(count: int) -> None:
    with pytest.raises(ValueError, match="device count must be between"):
        devices.device_ids(KVM, count)


def test_every_catalogued_device_has_valid_ids() -> None:
    for device in catalogue.DEVICES.values():
        ids = devices.device_ids(device, devices.MAX_DEVICE_COUNT)
        assert max(len(i) for i in ids) <= devices.MAX_ID_LENGTH


def test_the_node_is_looked_for_under_the_host_root() -> None:
    tun = catalogue.DEVICES["tun"]
    assert devices.host_node(tun, "/host") == "/host/dev/net/tun"
    assert devices.host_node(tun, "/") == "/dev/net/tun"


def test_a_character_device_is_healthy(tmp_path: Path) -> None:
    make_node(tmp_path, "dev/kvm")
    assert devices.node_health(str(tmp_path / "dev/kvm")) == devices.HEALTHY


def test_a_missing_node_or_a_plain_file_is_unhealthy(tmp_path: Path) -> None:
    assert devices.node_health(str(tmp_path / "kvm")) == devices.UNHEALTHY
    (tmp_path / "kvm").write_text("not a device")
    assert devices.node_health(str(tmp_path / "kvm")) == devices.UNHEALTHY
    os.mkfifo(tmp_path / "fifo")
    assert devices.node_health(str(tmp_path / "fifo")) == devices.UNHEALTHY


@pytest.mark.parametrize("permissions", ["rw", "rwm"])
def test_allocate_gives_the_node_at_the_same_path_with_the_nodes_permissions(
    permissions: str,
) -> None:
    known = frozenset(devices.device_ids(KVM, 3))
    spec = devices.allocate(KVM, known, ["kvm-000", "kvm-002"], permissions=permissions)
    assert spec == devices.DeviceSpec(
        container_path="/dev/kvm", host_path="/dev/kvm", permissions=permissions
    )


def test_allocate_refuses_unknown_ids_and_names_them() -> None:
    known = frozenset(devices.device_ids(KVM, 3))
    with pytest.raises(devices.AllocationError, match=r"unknown device IDs .*: kvm-999, tun-000"):
        devices.allocate(KVM, known, ["kvm-000", "tun-000", "kvm-999"], permissions="rw")


def test_allocate_refuses_an_empty_request() -> None:
    with pytest.raises(devices.AllocationError, match="names no device IDs"):
        devices.allocate(KVM, frozenset({"kvm-000"}), [], permissions="rw")


IDS = devices.device_ids(KVM, 6)


@pytest.mark.parametrize(
    ("available", "must_include", "size", "expected"),
    [
        (IDS, [], 2, ["kvm-000", "kvm-001"]),
        (list(reversed(IDS)), [], 2, ["kvm-000", "kvm-001"]),
        (IDS, ["kvm-004"], 3, ["kvm-004", "kvm-000", "kvm-001"]),
        (IDS, ["kvm-004", "kvm-002"], 2, ["kvm-004", "kvm-002"]),
        (["kvm-003", "kvm-005"], [], 2, ["kvm-003", "kvm-005"]),
        (["kvm-003"], [], 4, ["kvm-003"]),
        (IDS, [], 0, []),
        (["kvm-001", "bogus"], [], 2, ["kvm-001"]),
    ],
)
def test_preferred_allocation_honours_must_include_and_size(
    available: list[str], must_include: list[str], size: int, expected: list[str]
) -> None:
    chosen = devices.preferred_allocation(
        IDS, available=available, must_include=must_include, size=size
    )
    assert chosen == expected


def test_preferred_allocation_refuses_a_negative_size() -> None:
    with pytest.raises(devices.AllocationError, match="must not be negative"):
        devices.preferred_allocation(IDS, available=IDS, must_include=[], size=-1)
