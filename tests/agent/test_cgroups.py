"""The node's cgroup version from the mount table, and virt-handler's permissions rule."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent import cgroups
from virtdev import catalogue

#: A unified (cgroup v2) node's container, as runc mounts it.
UNIFIED = """\
1581 1444 0:337 / / ro,relatime master:660 - overlay overlay rw,lowerdir=/l,upperdir=/u
1585 1581 0:340 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1586 1585 0:32 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
"""
#: A hybrid node (systemd's default before v2): tmpfs at /sys/fs/cgroup, cgroup2 only below it.
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_a_cgroup2_mount_at_sys_fs_cgroup_is_found() -> None:
    assert cgroups.filesystem_at(UNIFIED) == "cgroup2"


def test_cgroup2_below_the_mount_point_does_not_count() -> None:
    assert cgroups.filesystem_at(HYBRID) == "tmpfs"


def test_the_last_mount_on_the_point_is_the_one_a_path_reaches() -> None:
    stacked = HYBRID + "99 31 0:99 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert cgroups.filesystem_at(stacked) == "cgroup2"


def test_optional_fields_before_the_separator_are_skipped() -> None:
    line = "30 23 0:26 / /sys/fs/cgroup ro shared:9 master:2 - cgroup2 cgroup2 rw\n"
    assert cgroups.filesystem_at(line) == "cgroup2"


@pytest.mark.parametrize(
    "text",
    ["", "garbage\n", "1 2 3 4 /sys/fs/cgroup\n", "1 2 3 4 /sys/fs/cgroup rw -\n", "\x00 - \n"],
)
def test_nothing_or_nonsense_finds_no_filesystem(text: str) -> None:
    assert cgroups.filesystem_at(text) is None


def test_virt_handlers_rule_rwm_on_cgroup_v2_only() -> None:
    assert cgroups.device_permissions("cgroup2") == catalogue.DEVICE_PERMISSIONS_CGROUP_V2 == "rwm"
    for other in ("tmpfs", "cgroup", None):
        assert cgroups.device_permissions(other) == catalogue.DEVICE_PERMISSIONS_CGROUP_V1 == "rw"


def test_the_nodes_permissions_are_read_from_the_mount_table_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unified, hybrid = tmp_path / "unified", tmp_path / "hybrid"
    unified.write_text(UNIFIED)
    hybrid.write_text(HYBRID)
    with caplog.at_level(logging.INFO, logger="agent.cgroups"):
        assert cgroups.node_device_permissions(str(unified)) == "rwm"
        assert cgroups.node_device_permissions(str(hybrid)) == "rw"
    logged = [(r.permissions, r.cgroup_filesystem) for r in caplog.records]  # type: ignore[attr-defined]
    assert logged == [("rwm", "cgroup2"), ("rw", "tmpfs")]


def test_an_unreadable_mount_table_is_warned_about_and_counts_as_v1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="agent.cgroups"):
        assert cgroups.node_device_permissions(str(tmp_path / "missing")) == "rw"
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.getMessage() == "cannot read the mount table; answering as on cgroup v1"
    assert warning.error == "No such file or directory"  # type: ignore[attr-defined]
