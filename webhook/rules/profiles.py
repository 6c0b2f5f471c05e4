"""What each KubeVirt release renders into a virt-launcher pod, as data.

One row per range of releases: a row holds from its `since` release until the next row's. Each
row states, per launcher container role, the capabilities KubeVirt adds (conditional ones
included: a VM that uses the feature gets them), which roles it may render `privileged`, the
hostPath volumes it mounts, the pod's SELinux type and whether it requests its devices
(`devices.kubevirt.io/*`) itself. Every entry cites the template code it was read from, as
`path@tag:lines` in kubevirt/kubevirt. Adding a release is adding a row.

`/validate` allows exactly these exceptions to Pod Security baseline (`webhook.rules.baseline`),
except `privileged`, which is never allowed: `/mutate` replaces it the way KubeVirt v0.7 did.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Version = tuple[int, int]
Role = Literal[
    "compute", "virtiofs", "hook-sidecar", "guest-console-log", "container-disk", "unknown"
]
ROLES: tuple[Role, ...] = (
    "compute",
    "virtiofs",
    "hook-sidecar",
    "guest-console-log",
    "container-disk",
    "unknown",
)

#: A trailing `/` in `Profile.host_paths` makes the entry per-VM: KubeVirt mounts the directory
#: of the pod's own VMI below it (`…/container-disks/<vmi uid>`), and nothing else there.
CONTAINER_DISKS = "/var/run/kubevirt/container-disks/"


@dataclass(frozen=True, slots=True)
class Profile:
    """What the releases from `since` on render, until the next profile's `since`."""

    since: Version
    #: Capabilities KubeVirt adds per container role, whether or not baseline allows them.
    capabilities: Mapping[Role, frozenset[str]]
    #: Roles KubeVirt renders `privileged: true` in some configuration (never an exception).
    privileged: frozenset[Role] = frozenset()
    #: hostPath volumes KubeVirt mounts into every launcher of these releases.
    host_paths: frozenset[str] = frozenset()
    #: The pod's `securityContext.seLinuxOptions.type` ("" when KubeVirt sets none).
    selinux_type: str = ""
    #: Whether compute requests `devices.kubevirt.io/*` itself (from v0.7).
    requests_devices: bool = True
    #: Whether compute needs NET_ADMIN to configure the VM's network (until v0.40).
    needs_net_admin: bool = False
    #: Whether the hotplug attachment pods (`kubevirt.io=hotplug-disk`, v0.36+) share the
    #: host's network (v0.36 - v0.46): /guard judges them in guarded namespaces.
    hotplug_host_network: bool = False
    #: `path@tag:lines` of the template code the row was read from.
    source: str = ""
    #: Set only for the profile of pods that are not launchers (`BASELINE`).
    title: str = ""

    @property
    def name(self) -> str:
        """The releases it covers: `v0.44-v0.52`, `v1.7+` for the newest, `v0.7` for one."""
        return self.title or _NAMES.get(self.since) or _span(self)

    def mounts(self, path: str, *, vmi: str = "") -> bool:
        """Whether the release mounts this (normalised) host path itself. A per-VM entry
        (ending in `/`) names exactly one directory: the one of the pod's own VMI, whose uid
        KubeVirt writes in the `kubevirt.io/created-by` label (`T@v0.20.0:751-757,793`) — not
        any directory below it, where another VM's launcher may have left a symlink."""
        if path in self.host_paths:
            return True
        if not _is_name(vmi):
            return False
        return any(entry.endswith("/") and path == entry + vmi for entry in self.host_paths)


def _is_name(text: str) -> bool:
    """One path component (a uid), never `..` nor a path of its own."""
    return bool(text) and "/" not in text and text not in (".", "..") and "\0" not in text


S = "pkg/virt-controller/services/"
T = f"{S}template.go"
#: The share directory (`--kubevirt-share-dir`): sockets and per-VM state, until v0.28.
SHARE_DIR = "/var/run/kubevirt"
#: SR-IOV / VFIO host devices, v0.11 - v0.36 (`T@v0.11.0:187-231`, `T@v0.36.0:376-392`).
PCI_BUS, SYS_DEVICES, DEV_VFIO = "/sys/bus/pci", "/sys/devices", "/dev/vfio"
#: virtiofsd's sandbox, added with virtiofs to compute in v0.40 (`T@v0.40.0:1375-1403`).
VIRTIOFSD = frozenset(
    {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "MKNOD", "SETFCAP"}
)


def _caps(*names: str) -> frozenset[str]:
    return frozenset(names)


PROFILES: tuple[Profile, ...] = (
    # <= v0.6: compute privileged, no devices requested (T@v0.6.0:82-83,187-192), the share
    # dir mounted (T@v0.6.0:215-222). A privileged container runs as spc_t; virtdev's rewrite
    # sets it explicitly, as v0.7 did when it dropped privileged (commit e59ed2bd68: "a problem
    # to run unprivileged virt-launcher pod because of SELinux"; T@v0.7.0:326-331).
    Profile(
        since=(0, 0),
        capabilities={},
        privileged=frozenset({"compute"}),
        host_paths=frozenset({SHARE_DIR}),
        selinux_type="spc_t",
        requests_devices=False,
        source=f"{T}@v0.6.0:82-83,182-235,265-267",
    ),
    # v0.7: privileged off, NET_ADMIN always (T@v0.7.0:247-255), pod spc_t (T@v0.7.0:326-331),
    # kvm and tun in limits (T@v0.7.0:228-237).
    Profile(
        since=(0, 7),
        capabilities={"compute": _caps("NET_ADMIN")},
        host_paths=frozenset({SHARE_DIR}),
        selinux_type="spc_t",
        needs_net_admin=True,
        source=f"{T}@v0.7.0:228-255,326-331",
    ),
    # v0.9: SYS_NICE with dedicated CPUs (T@v0.9.0:570-582), always from v0.10
    # (T@v0.10.0:617-627); NET_ADMIN with any interface (T@v0.8.0:306-320,452-460).
    Profile(
        since=(0, 9),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE")},
        host_paths=frozenset({SHARE_DIR}),
        selinux_type="spc_t",
        needs_net_admin=True,
        source=f"{T}@v0.9.0:570-582, {T}@v0.10.0:617-627",
    ),
    # v0.11 - v0.18: SR-IOV VMIs run privileged (T@v0.11.0:236-238, T@v0.18.0:392-394) and
    # mount the PCI bus, devices and VFIO (T@v0.11.0:187-231).
    Profile(
        since=(0, 11),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE")},
        privileged=frozenset({"compute"}),
        host_paths=frozenset({SHARE_DIR, PCI_BUS, SYS_DEVICES, DEV_VFIO}),
        selinux_type="spc_t",
        needs_net_admin=True,
        source=f"{T}@v0.11.0:187-239, {T}@v0.18.0:343-395",
    ),
    # v0.19: SR-IOV unprivileged with SYS_RESOURCE (T@v0.19.0:921-937), mounting the PCI bus,
    # devices and VFIO still (T@v0.19.0:343-387).
    Profile(
        since=(0, 19),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE", "SYS_RESOURCE")},
        host_paths=frozenset({SHARE_DIR, PCI_BUS, SYS_DEVICES, DEV_VFIO}),
        selinux_type="spc_t",
        needs_net_admin=True,
        source=f"{T}@v0.19.0:343-387,882-887,921-937",
    ),
    # v0.20: container disks through the host (T@v0.20.0:729-757), SR-IOV mounts /sys/devices
    # only (T@v0.20.0:354-370), SYS_RESOURCE still (T@v0.20.0:923-939).
    Profile(
        since=(0, 20),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE", "SYS_RESOURCE")},
        host_paths=frozenset(
            {SHARE_DIR, "/var/lib/kubevirt/init/usr/bin", CONTAINER_DISKS, SYS_DEVICES}
        ),
        selinux_type="spc_t",
        needs_net_admin=True,
        source=f"{T}@v0.20.0:354-370,683-757,884-889,923-939",
    ),
    # v0.21: SYS_RESOURCE gone (T@v0.21.0:949-959); pod type virt_launcher.process, no longer
    # spc_t (T@v0.21.0:910-915, commit bd181f2223 "use a dedicated selinux label for
    # virt-launcher"; the same to v0.26: T@v0.26.0:963-968).
    Profile(
        since=(0, 21),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE")},
        host_paths=frozenset(
            {SHARE_DIR, "/var/lib/kubevirt/init/usr/bin", CONTAINER_DISKS, SYS_DEVICES}
        ),
        selinux_type="virt_launcher.process",
        needs_net_admin=True,
        source=f"{T}@v0.21.0:910-915,949-959, {T}@v0.26.0:963-968",
    ),
    # v0.27: pod type virt_launcher.process (T@v0.27.0:957-982); compute privileged when
    # virt-controller runs on ppc64le (T@v0.27.0:324-327).
    Profile(
        since=(0, 27),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE")},
        privileged=frozenset({"compute"}),
        host_paths=frozenset(
            {SHARE_DIR, "/var/lib/kubevirt/init/usr/bin", CONTAINER_DISKS, SYS_DEVICES}
        ),
        selinux_type="virt_launcher.process",
        needs_net_admin=True,
        source=f"{T}@v0.27.0:324-327,957-982",
    ),
    # v0.28: no SELinux type unless configured (T@v0.28.0:986-1009).
    Profile(
        since=(0, 28),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE")},
        privileged=frozenset({"compute"}),
        host_paths=frozenset(
            {SHARE_DIR, "/var/lib/kubevirt/init/usr/bin", CONTAINER_DISKS, SYS_DEVICES}
        ),
        needs_net_admin=True,
        source=f"{T}@v0.28.0:829-864,986-1009",
    ),
    # v0.29: the share dir and container disks become emptyDirs (T@v0.29.0:833-858); only
    # SR-IOV or GPU VMIs mount /sys/devices (T@v0.29.0:362-378).
    Profile(
        since=(0, 29),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE")},
        privileged=frozenset({"compute"}),
        host_paths=frozenset({SYS_DEVICES}),
        needs_net_admin=True,
        source=f"{T}@v0.29.0:318-326,362-378,833-858,1047-1091",
    ),
    # v0.30 - v0.35: NET_RAW beside NET_ADMIN (T@v0.30.0:1147-1161).
    Profile(
        since=(0, 30),
        capabilities={"compute": _caps("NET_ADMIN", "NET_RAW", "SYS_NICE")},
        privileged=frozenset({"compute"}),
        host_paths=frozenset({SYS_DEVICES}),
        needs_net_admin=True,
        source=f"{T}@v0.30.0:363-379,1077-1161",
    ),
    # v0.33: virt_launcher.process by default again (pkg/virt-config/virt-config.go@v0.33.0:59).
    Profile(
        since=(0, 33),
        capabilities={"compute": _caps("NET_ADMIN", "NET_RAW", "SYS_NICE")},
        privileged=frozenset({"compute"}),
        host_paths=frozenset({SYS_DEVICES}),
        selinux_type="virt_launcher.process",
        needs_net_admin=True,
        source="pkg/virt-config/virt-config.go@v0.33.0:59",
    ),
    # v0.34: virtiofsd runs in compute with SYS_ADMIN (T@v0.34.0:1116-1135).
    Profile(
        since=(0, 34),
        capabilities={"compute": _caps("NET_ADMIN", "NET_RAW", "SYS_NICE", "SYS_ADMIN")},
        privileged=frozenset({"compute"}),
        host_paths=frozenset({SYS_DEVICES}),
        selinux_type="virt_launcher.process",
        needs_net_admin=True,
        source=f"{T}@v0.34.0:1116-1135",
    ),
    # v0.36: NET_RAW dropped (T@v0.36.0:905-912,1306-1321); /sys/devices for VFIO
    # (T@v0.36.0:376-392); hotplug attachment pods on the host's network (T@v0.36.0:1211-1305).
    Profile(
        since=(0, 36),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE", "SYS_ADMIN")},
        privileged=frozenset({"compute"}),
        host_paths=frozenset({SYS_DEVICES}),
        selinux_type="virt_launcher.process",
        needs_net_admin=True,
        hotplug_host_network=True,
        source=f"{T}@v0.36.0:376-392,901-918,1141-1178,1306-1321",
    ),
    # v0.37: no hostPath left: VFIO's /sys/devices (T@v0.36.0:376-392) is gone (T@v0.37.0:340-374).
    Profile(
        since=(0, 37),
        capabilities={"compute": _caps("NET_ADMIN", "SYS_NICE", "SYS_ADMIN")},
        privileged=frozenset({"compute"}),
        selinux_type="virt_launcher.process",
        needs_net_admin=True,
        hotplug_host_network=True,
        source=f"{T}@v0.37.0:325-374,884-896,1194-1265,1289-1304",
    ),
    # v0.39: SYS_RESOURCE with SRIOVLiveMigration (T@v0.39.0:1348-1371); v0.40 adds
    # virtiofsd's set with virtiofs (T@v0.40.0:1375-1412).
    Profile(
        since=(0, 39),
        capabilities={
            "compute": _caps("NET_ADMIN", "SYS_NICE", "SYS_ADMIN", "SYS_RESOURCE") | VIRTIOFSD
        },
        privileged=frozenset({"compute"}),
        selinux_type="virt_launcher.process",
        needs_net_admin=True,
        hotplug_host_network=True,
        source=f"{T}@v0.39.0:965-969,1348-1371, {T}@v0.40.0:986-990,1375-1412",
    ),
    # v0.41: NET_ADMIN gone (commit 455a083cce, PR #5147); SYS_NICE, virtiofs in compute,
    # SYS_RESOURCE with SRIOVLiveMigration (T@v0.41.0:1013-1025,1429-1448); no hostPath but
    # hostDisk's (T@v0.41.0:501-521); virt_launcher.process by default on the pod and every
    # other container (pkg/virt-config/virt-config.go@v0.41.0:62, T@v0.41.0:1676-1697).
    Profile(
        since=(0, 41),
        capabilities={
            "compute": _caps("SYS_NICE", "SYS_ADMIN", "SYS_RESOURCE") | VIRTIOFSD,
        },
        privileged=frozenset({"compute"}),
        selinux_type="virt_launcher.process",
        hotplug_host_network=True,
        source=f"{T}@v0.41.0:407-408,1013-1025,1247-1249,1429-1448",
    ),
    # v0.42: SYS_RESOURCE gone (T@v0.42.0:1453-1466).
    Profile(
        since=(0, 42),
        capabilities={"compute": _caps("SYS_NICE", "SYS_ADMIN") | VIRTIOFSD},
        privileged=frozenset({"compute"}),
        selinux_type="virt_launcher.process",
        hotplug_host_network=True,
        source=f"{T}@v0.42.0:1453-1466",
    ),
    # v0.44: NET_BIND_SERVICE for DHCP/slirp (T@v0.44.0:1689-1724); on ppc64le hook sidecars
    # and container-disk-binary share compute's privileged (T@v0.44.0:441-444,1267-1270,1331-1334).
    Profile(
        since=(0, 44),
        capabilities={"compute": _caps("NET_BIND_SERVICE", "SYS_NICE", "SYS_ADMIN") | VIRTIOFSD},
        privileged=frozenset({"compute", "hook-sidecar", "container-disk"}),
        selinux_type="virt_launcher.process",
        hotplug_host_network=True,
        source=f"{T}@v0.44.0:441-444,1082-1108,1251-1284,1327-1345,1689-1724",
    ),
    # v0.47 (first release v0.47.1: kubevirt has no v0.47.0 tag): hotplug attachment pods leave
    # the host's network (T@v0.46.0:1553,1698 had it; T@v0.47.1:1501-1741 has not, commit
    # 10c42f3783). Launchers as in v0.44: privileged on ppc64le for compute, hook sidecars and
    # container-disk-binary (T@v0.47.1:502-505,1300-1303,1364-1367); SYS_ADMIN and virtiofsd's
    # set with virtiofs (T@v0.47.1:1743-1790).
    Profile(
        since=(0, 47),
        capabilities={"compute": _caps("NET_BIND_SERVICE", "SYS_NICE", "SYS_ADMIN") | VIRTIOFSD},
        privileged=frozenset({"compute", "hook-sidecar", "container-disk"}),
        selinux_type="virt_launcher.process",
        source=f"{T}@v0.47.1:502-505,1115-1126,1300-1303,1364-1367,1425-1428,1501-1741,1743-1790",
    ),
    # v0.53: SYS_PTRACE for libvirt and swtpm, root or not (T@v0.53.0:1143-1162,1798-1816).
    Profile(
        since=(0, 53),
        capabilities={
            "compute": _caps("NET_BIND_SERVICE", "SYS_PTRACE", "SYS_NICE", "SYS_ADMIN") | VIRTIOFSD
        },
        privileged=frozenset({"compute", "hook-sidecar", "container-disk"}),
        selinux_type="virt_launcher.process",
        source=f"{T}@v0.53.0:1143-1162,1798-1816",
    ),
    # v0.54: sidecars no longer privileged on ppc64le (pkg/virt-controller/services/
    # rendercontainer.go@v0.54.0:86-93,236-254, T@v0.58.0:567-597).
    Profile(
        since=(0, 54),
        capabilities={
            "compute": _caps("NET_BIND_SERVICE", "SYS_PTRACE", "SYS_NICE", "SYS_ADMIN") | VIRTIOFSD
        },
        privileged=frozenset({"compute", "container-disk"}),
        selinux_type="virt_launcher.process",
        source=f"{S}rendercontainer.go@v0.54.0:86-93,159-172,236-254",
    ),
    # v0.58: virtiofsd in its own root `virtiofs-<vol>` container with nine capabilities, all
    # within baseline (S/virtiofs.go@v0.58.0:61-87,98-125); compute keeps
    # NET_BIND_SERVICE, SYS_PTRACE, SYS_NICE (S/rendercontainer.go@v0.58.0:87-94,237-250).
    Profile(
        since=(0, 58),
        capabilities={
            "compute": _caps("NET_BIND_SERVICE", "SYS_PTRACE", "SYS_NICE"),
            "virtiofs": VIRTIOFSD | {"SYS_CHROOT"},
        },
        privileged=frozenset({"compute", "container-disk"}),
        selinux_type="virt_launcher.process",
        source=f"{S}rendercontainer.go@v0.58.0:87-94,237-250, {S}virtiofs.go@v0.58.0:61-125",
    ),
    # v0.59: non-root by default: uid 107, drop ALL, add NET_BIND_SERVICE; the Root gate adds
    # SYS_NICE; SYS_PTRACE gone (S/rendercontainer.go@v0.59.0:88-118,184-199,263-273). No
    # SELinux type by default, but virt_launcher.process for passt VMIs until v1.2
    # (virt-config.go@v0.59.0:65, T@v0.59.0:1168-1202, T@v1.2.0:1283).
    Profile(
        since=(0, 59),
        capabilities={
            "compute": _caps("NET_BIND_SERVICE", "SYS_NICE"),
            "virtiofs": VIRTIOFSD | {"SYS_CHROOT"},
        },
        privileged=frozenset({"compute", "container-disk"}),
        selinux_type="virt_launcher.process",
        source=f"{S}rendercontainer.go@v0.59.0:88-118,184-199,263-273, {T}@v0.59.0:285-300,609-672",
    ),
    # v1.3: a SELinux type only where the admin configures one, passt VMIs included (T@v1.3.0:604,
    # 1275-1302; virt-config.go@v1.3.0:68); virtiofs-<vol> root with nine capabilities for PVCs
    # (S/virtiofs.go@v1.3.0:99-133,162-168); privileged on ppc64le (T@v1.3.0:720-722,739-741).
    Profile(
        since=(1, 3),
        capabilities={
            "compute": _caps("NET_BIND_SERVICE", "SYS_NICE"),
            "virtiofs": VIRTIOFSD | {"SYS_CHROOT"},
        },
        privileged=frozenset({"compute", "container-disk"}),
        source=f"{T}@v1.3.0:604,720-741,1275-1302, {S}virtiofs.go@v1.3.0:99-133,162-168",
    ),
    # v1.5: virtiofsd unprivileged, root VMI or not: uid 107, drop ALL
    # (S/virtiofs.go@v1.5.0:94-145); compute as in v1.3 (S/rendercontainer.go@v1.5.0:203-218,
    # 282-292, T@v1.5.0:768-770,784-790).
    Profile(
        since=(1, 5),
        capabilities={"compute": _caps("NET_BIND_SERVICE", "SYS_NICE")},
        privileged=frozenset({"compute", "container-disk"}),
        source=f"{S}virtiofs.go@v1.5.0:94-145, {S}rendercontainer.go@v1.5.0:203-218,282-292",
    ),
    # v1.7 - v1.9 (and main): `privileged` no longer rendered at all, ppc64le included (commits
    # c4945d8efe, 4ca8638972; S/rendercontainer.go@v1.7.0:206-220, T@v1.7.0:808-848); the Root
    # gate's compute adds SYS_NICE (S/rendercontainer.go@v1.7.0:284-295); guest-console-log,
    # container disks, virtiofs-<vol> and non-root VMIs' hook sidecars drop ALL
    # (S/serialconsolelog.go@v1.7.0:37-44, pkg/container-disk/container-disk.go@v1.7.0:294-322,
    # S/virtiofs.go@v1.7.0:134-144, T@v1.7.0:793-796); the same in v1.9
    # (S/rendercontainer.go@v1.9.0:99-129,207-221,285-295, T@v1.9.0:877-923).
    Profile(
        since=(1, 7),
        capabilities={"compute": _caps("NET_BIND_SERVICE", "SYS_NICE")},
        source=f"{S}rendercontainer.go@v1.7.0:98-128,206-220,284-295, {T}@v1.7.0:313-332,769-848",
    ),
)


def _span(profile: Profile) -> str:
    later = [p.since for p in PROFILES if p.since > profile.since]
    first = _show(profile.since)
    if not later:
        return first + "+"
    last = _previous_release(min(later))
    if profile.since == (0, 0):
        return f"<={_show(last)}"
    return first if last == profile.since else f"{first}-{_show(last)}"


def _show(version: Version) -> str:
    return f"v{version[0]}.{version[1]}"


#: The last minor release of each major series before the next: v0.59 came before v1.0.
_LAST_MINOR = {0: 59}


def _previous_release(version: Version) -> Version:
    major, minor = version
    return (major, minor - 1) if minor else (major - 1, _LAST_MINOR[major - 1])


#: What a pod that is not a launcher may hold beyond baseline: nothing (/guard).
BASELINE = Profile(
    since=(-1, 0),
    capabilities={},
    title="Pod Security baseline",
    source="staging/src/k8s.io/pod-security-admission/policy (kubernetes/kubernetes)",
)

#: Each row's name, worked out once: every launcher's audit annotation carries it.
_NAMES: dict[Version, str] = {}
_NAMES.update({profile.since: _span(profile) for profile in PROFILES})
#: Who grants each row's exceptions, as messages name it (`KubeVirt v1.7+`); BASELINE grants
#: none, so it has no entry. Worked out once: every container /validate checks names it.
GRANTERS: dict[Version, str] = {since: f"KubeVirt {name}" for since, name in _NAMES.items()}


def newest() -> Profile:
    return PROFILES[-1]


def profile_for(version: Version) -> Profile:
    """The row that holds for `version`: the last one whose `since` is not after it."""
    chosen = PROFILES[0]
    for profile in PROFILES:
        if profile.since <= version:
            chosen = profile
    return chosen


_VERSION = re.compile(r"v?(\d{1,4})\.(\d{1,4})(?:\.\d{1,6})?(?:[-+][0-9A-Za-z.\-+]{0,64})?")


def parse_version(text: str) -> Version | None:
    """`v1.9`, `v1.9.0`, `1.9.0-rc.1` -> (1, 9); anything else -> None."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


LAUNCHER_IMAGE = "virt-launcher"


def _repository_and_tag(image: str) -> tuple[str, str]:
    name = image.split("@", 1)[0]
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:  # `registry:5000/kubevirt/virt-launcher` has no tag at all
        return name, ""
    return repository, tag


def is_launcher_image(image: str) -> bool:
    """`<registry>/<org>/virt-launcher[:tag][@digest]`, whatever the registry."""
    return _repository_and_tag(image)[0].rpartition("/")[2] == LAUNCHER_IMAGE


#: Image references up to this long are remembered by `release_from_image` (64 of them: 32 KiB
#: at most). Real ones are shorter (a name ≤ 255 characters, a tag ≤ 128, a digest 71); a pod
#: may carry megabytes in `image`, which are worked out each time (0.9 µs and linear), not kept.
MAX_CACHED_IMAGE = 512


def release_from_image(image: str) -> Version | None:
    """The release in a `…/virt-launcher:vX.Y.Z` image reference; None for a digest-only
    reference, another repository or a tag that is no release (`latest`, `devel`)."""
    if len(image) > MAX_CACHED_IMAGE:
        return _release_from_image(image)
    return _cached_release_from_image(image)


def _release_from_image(image: str) -> Version | None:
    repository, tag = _repository_and_tag(image)
    if repository.rpartition("/")[2] != LAUNCHER_IMAGE or not tag:
        return None
    return parse_version(tag)


#: Every launcher review reads its images' release: 0.06 µs remembered, 0.9 µs worked out.
_cached_release_from_image = functools.lru_cache(maxsize=64)(_release_from_image)
