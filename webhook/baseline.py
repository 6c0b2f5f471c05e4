"""Pod Security *baseline*, as data: what the standard lets any pod hold.

Read from Kubernetes' own checks, `staging/src/k8s.io/pod-security-admission/policy/` in
kubernetes/kubernetes (file named beside each entry; `latest` is the newest policy version).
`/validate` judges every launcher container against these sets and then allows exactly the
exceptions the pod's KubeVirt release renders (`webhook.profiles`), so a launcher namespace that
must run Pod Security `privileged` still gets baseline from virtdev.

Pure data and one-line predicates; the walk over a pod lives in `webhook.validation`.
"""

from __future__ import annotations

#: Host namespaces a pod may not share (check_hostNamespaces.go).
HOST_NAMESPACES: tuple[str, ...] = ("hostPID", "hostIPC", "hostNetwork")

#: Capabilities any container may add (check_capabilities_baseline.go, 1.0+): the container
#: runtime's default set, minus NET_RAW.
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

#: SELinux types a pod or container may set; user and role must stay empty
#: (check_seLinuxOptions.go: 1.0 the first four, 1.31 adds container_engine_t).
SELINUX_TYPES: frozenset[str] = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)

#: `securityContext.seccompProfile.type` values allowed when set (check_seccompProfile_baseline.go,
#: 1.19+): `Unconfined` and anything unknown are not.
SECCOMP_TYPES: frozenset[str] = frozenset({"RuntimeDefault", "Localhost"})

#: `securityContext.appArmorProfile.type` values allowed when set (check_appArmorProfile.go).
APPARMOR_TYPES: frozenset[str] = frozenset({"RuntimeDefault", "Localhost"})
#: The beta AppArmor annotation, per container; its value must be empty, `runtime/default` or
#: `localhost/<profile>` (check_appArmorProfile.go).
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"

#: Namespaced, isolated sysctls (check_sysctls.go: 1.0, +1.27, +1.29, +1.32).
SYSCTLS: frozenset[str] = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)

#: `procMount` values allowed (check_procMount_baseline.go); 1.35 allows any value in a pod with
#: its own user namespace (`hostUsers: false`).
PROC_MOUNTS: frozenset[str] = frozenset({"", "Default"})

#: Probe and lifecycle-hook handlers whose `host` must stay empty
#: (check_hostProbesAndhostLifecycle.go, 1.34+): they would let the kubelet reach other hosts.
PROBES: tuple[str, ...] = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HOOKS: tuple[str, ...] = ("postStart", "preStop")
HANDLERS_WITH_HOST: tuple[str, ...] = ("httpGet", "tcpSocket")


def apparmor_annotation_allowed(value: str) -> bool:
    """The beta annotation's value: unset/empty, the runtime's default or a localhost profile."""
    return value in ("", "runtime/default") or value.startswith("localhost/")
