"""Pod Security *baseline*, as data: what the standard lets any pod hold, at each version.

Read from Kubernetes' own checks, `policy/check_*.go` in kubernetes/pod-security-admission
(commit 8f84a87; file named beside each entry). Baseline is versioned as Pod Security Admission
versions it (`pod-security.kubernetes.io/enforce-version: v1.N | latest`): a check holds from
its `MinimumVersion`, so a cluster admin who pins v1.28 gets what PSA v1.28 enforces. What never
changed is a constant; what did is a row of `VERSIONS`, and `at(version)` resolves a version to
the controls PSA applies there. `LATEST` is the newest version this data knows; a newer v1.N is
judged by it, as PSA judges a version newer than its own checks.
`/validate` judges every launcher container against these sets and then allows exactly the
exceptions the pod's KubeVirt release renders (`webhook.rules.profiles`), so a launcher namespace
that must run Pod Security `privileged` still gets baseline from virtdev.

Pure data and one-line predicates; the walk over a pod lives in `webhook.rules.validation`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

Version = tuple[int, int]

#: Host namespaces a pod may not share (check_hostNamespaces.go).
HOST_NAMESPACES: tuple[str, ...] = ("hostPID", "hostIPC", "hostNetwork")

#: Capabilities any container may add (check_capabilities_baseline.go:60-75, 1.0+): the
#: container runtime's default set, minus NET_RAW. Compared as spelt: `chown` and `CAP_CHOWN` are
#: not `CHOWN` (check_capabilities_baseline.go:82-84, `Has(string(c))`).
CAPABILITIES: frozenset[str] = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)

#: `securityContext.seccompProfile.type` values allowed when set (check_seccompProfile_baseline.go,
#: 1.19+): `Unconfined` and anything unknown are not.
SECCOMP_TYPES: frozenset[str] = frozenset({"RuntimeDefault", "Localhost"})

#: `securityContext.appArmorProfile.type` values allowed when set (check_appArmorProfile.go).
APPARMOR_TYPES: frozenset[str] = frozenset({"RuntimeDefault", "Localhost"})
#: The beta AppArmor annotation, per container; its value must be empty, `runtime/default` or
#: `localhost/<profile>` (check_appArmorProfile.go).
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"

#: `procMount` values allowed (check_procMount_baseline.go:62-90); from 1.35 any value in a pod
#: with its own user namespace (`hostUsers: false`, check_procMount_baseline.go:92-100).
PROC_MOUNTS: frozenset[str] = frozenset({"", "Default"})

#: Probe and lifecycle-hook handlers whose `host` must stay empty from 1.34
#: (check_hostProbesAndhostLifecycle.go:57-72): they would let the kubelet reach other hosts.
PROBES: tuple[str, ...] = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HOOKS: tuple[str, ...] = ("postStart", "preStop")
HANDLERS_WITH_HOST: tuple[str, ...] = ("httpGet", "tcpSocket")


def apparmor_annotation_allowed(value: str) -> bool:
    """The beta annotation's value: unset/empty, the runtime's default or a localhost profile."""
    return value in ("", "runtime/default") or value.startswith("localhost/")


#: The seccomp alpha annotations PSA judges before 1.19 (check_seccompProfile_baseline.go:48-49,
#: 86-115): the pod's, and each container's by its name.
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"


def seccomp_annotation_allowed(value: str) -> bool:
    """runtime/default, docker/default or localhost/<profile> (check_seccompProfile_baseline.go:
    80-84)."""
    return value in ("runtime/default", "docker/default") or value.startswith("localhost/")


_SYSCTLS_1_0 = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    }
)
_SYSCTLS_1_27 = _SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
_SYSCTLS_1_29 = _SYSCTLS_1_27 | {
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SYSCTLS_1_32 = _SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
_SYSCTLS_1_37 = _SYSCTLS_1_32 | {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}
_SELINUX_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_SELINUX_1_31 = _SELINUX_1_0 | {"container_engine_t"}


@dataclass(frozen=True, slots=True)
class Controls:
    """What baseline allows from policy version `since` on, until the next row's."""

    since: Version
    #: Namespaced, isolated sysctls (check_sysctls.go:57-119).
    sysctls: frozenset[str]
    #: SELinux types a pod or container may set; user and role stay empty
    #: (check_seLinuxOptions.go:54-78).
    selinux_types: frozenset[str]
    #: 1.19+ judges `seccompProfile.type`; before, the alpha annotations
    #: (check_seccompProfile_baseline.go:54-72).
    seccomp_fields: bool
    #: 1.34+ forbids probe and lifecycle-hook hosts.
    host_probes: bool
    #: 1.35+ lets a pod in its own user namespace set any procMount.
    user_namespaces: bool


VERSIONS: tuple[Controls, ...] = (
    Controls((1, 0), _SYSCTLS_1_0, _SELINUX_1_0, False, False, False),
    Controls((1, 19), _SYSCTLS_1_0, _SELINUX_1_0, True, False, False),
    Controls((1, 27), _SYSCTLS_1_27, _SELINUX_1_0, True, False, False),
    Controls((1, 29), _SYSCTLS_1_29, _SELINUX_1_0, True, False, False),
    Controls((1, 31), _SYSCTLS_1_29, _SELINUX_1_31, True, False, False),
    Controls((1, 32), _SYSCTLS_1_32, _SELINUX_1_31, True, False, False),
    Controls((1, 34), _SYSCTLS_1_32, _SELINUX_1_31, True, True, False),
    Controls((1, 35), _SYSCTLS_1_32, _SELINUX_1_31, True, True, True),
    Controls((1, 37), _SYSCTLS_1_37, _SELINUX_1_31, True, True, True),
)
#: The newest policy version the data above knows: what `latest` means.
LATEST: Version = (1, 37)


@dataclass(frozen=True, slots=True)
class Baseline:
    """Baseline at one policy version: the version asked for and the controls PSA applies."""

    version: Version
    controls: Controls
    #: Whether the version was asked for as `latest`.
    latest: bool = False

    @property
    def name(self) -> str:
        """`v1.37`, or `latest (v1.37)`: how a denial names the version that judged."""
        text = f"v{self.version[0]}.{self.version[1]}"
        return f"latest ({text})" if self.latest else text


@functools.lru_cache(maxsize=64)
def at(version: Version, *, latest: bool = False) -> Baseline:
    """Baseline as PSA enforces it at `version` (a v1.N; newer than `LATEST` judged as it)."""
    controls = VERSIONS[0]
    for row in VERSIONS:
        if row.since <= version:
            controls = row
    return Baseline(version, controls, latest)


def parse_version(text: str) -> Baseline:
    """`latest` or `v1.N`, as `pod-security.kubernetes.io/enforce-version` spells it; a
    ValueError naming the flag otherwise."""
    if text == "latest":
        return at(LATEST, latest=True)
    match = re.fullmatch(r"v1\.(0|[1-9][0-9]{0,3})", text)
    if match is None:
        raise ValueError(f"--baseline-version {text!r}: expected latest or v1.N, e.g. v1.30")
    return at((1, int(match.group(1))))


#: What every rule uses unless the admin pins a version.
DEFAULT: Baseline = at(LATEST, latest=True)
