"""Which cgroup version the node runs, and so which DeviceSpec permissions the agent answers with.

virt-handler asks runc's `IsCgroup2UnifiedMode`: is the filesystem at /sys/fs/cgroup a cgroup2
filesystem (statfs, CGROUP2_SUPER_MAGIC)? The agent asks the same of its own mount table. A
container's /sys/fs/cgroup is what its runtime mounted there: cgroup2 on a unified (v2) node,
a tmpfs holding the v1 hierarchies on a v1 or hybrid node, so the answer is the node's.
Python's `os.statvfs` has no filesystem type, hence /proc/self/mountinfo.
"""

from __future__ import annotations

import logging

from virtdev import catalogue

log = logging.getLogger(__name__)

CGROUP_MOUNT_POINT = "/sys/fs/cgroup"
MOUNTINFO = "/proc/self/mountinfo"
CGROUP2 = "cgroup2"


def filesystem_at(mountinfo: str, mount_point: str = CGROUP_MOUNT_POINT) -> str | None:
    """The type of the filesystem mounted last at `mount_point` (the one a path there reaches,
    as statfs would report it), from the text of a mountinfo file; None when nothing is.

    A line is `ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - TYPE SOURCE ...`
    (proc(5)); lines that do not parse are skipped."""
    found = None
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if separator and len(fields) >= 5 and tail and fields[4] == mount_point:
            found = tail[0]
    return found


def device_permissions(filesystem: str | None) -> str:
    """virt-handler's rule (pkg/virt-handler/vm.go@v1.9.0:233-243): `rwm` on cgroup v2, else `rw`.

    Unknown (no mount at /sys/fs/cgroup) counts as v1, as it does for runc's check."""
    if filesystem == CGROUP2:
        return catalogue.DEVICE_PERMISSIONS_CGROUP_V2
    return catalogue.DEVICE_PERMISSIONS_CGROUP_V1


def node_device_permissions(mountinfo_path: str = MOUNTINFO) -> str:
    """The permissions for this node, logged with the reason; an unreadable mount table is
    logged and counts as cgroup v1."""
    try:
        with open(mountinfo_path, encoding="utf-8", errors="replace") as file:
            filesystem = filesystem_at(file.read())
    except OSError as error:
        log.warning(
            "cannot read the mount table; answering as on cgroup v1",
            extra={"path": mountinfo_path, "error": error.strerror or str(error)},
        )
        filesystem = None
    permissions = device_permissions(filesystem)
    log.info(
        "device permissions",
        extra={
            "permissions": permissions,
            "cgroup_filesystem": filesystem or "none",
            "mount_point": CGROUP_MOUNT_POINT,
        },
    )
    return permissions
