"""The pure rules: what /mutate patches and what /validate refuses, without any server.

Pods here are small on purpose; the renders of whole KubeVirt releases are in
`test_kubevirt_renders.py`.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from virtdev import catalogue
from virtdev.config import add_launcher_policy_flags
from webhook.admission import Request, guard_review, validate_review
from webhook.cli import launcher_policy
from webhook.rules import profiles
from webhook.rules.answer import Answer
from webhook.rules.launcher import read_launcher
from webhook.rules.mutation import Mutation, mutate, pointer
from webhook.rules.policy import LauncherPolicy
from webhook.rules.validation import Violation, device_warnings, new_violations, violations
from webhook.serving import review

KVM, TUN, VHOST = (
    "devices.kubevirt.io/kvm",
    "devices.kubevirt.io/tun",
    "devices.kubevirt.io/vhost-net",
)
DEFAULT = LauncherPolicy()
IMAGE = "quay.io/kubevirt/virt-launcher:{}"


def launcher(*containers: dict[str, Any], release: str = "v1.9.0", **spec: Any) -> dict[str, Any]:
    """A launcher pod whose compute (if any) runs the virt-launcher image of `release`."""
    listed = []
    for container in containers:
        container = dict(container)
        if container.get("name") == "compute":
            container.setdefault("image", IMAGE.format(release))
        listed.append(container)
    return {
        "metadata": {
            "generateName": "virt-launcher-vm-",
            "labels": {"kubevirt.io": "virt-launcher"},
        },
        "spec": {"containers": listed, **spec},
    }


def privileged_compute(**fields: Any) -> dict[str, Any]:
    return {"name": "compute", "securityContext": {"runAsUser": 0, "privileged": True}, **fields}


def run_mutate(pod: dict[str, Any], policy: LauncherPolicy = DEFAULT, **kw: Any) -> Mutation:
    return mutate(read_launcher(pod, policy), policy, **kw)


def found(pod: dict[str, Any], policy: LauncherPolicy = DEFAULT) -> list[Violation]:
    return list(violations(read_launcher(pod, policy), policy))


def paths(pod: dict[str, Any], policy: LauncherPolicy = DEFAULT) -> list[str]:
    return [violation.path for violation in found(pod, policy)]


def patched(pod: dict[str, Any], policy: LauncherPolicy = DEFAULT, **kw: Any) -> dict[str, Any]:
    result = run_mutate(pod, policy, **kw)
    return jsonpatch.apply_patch(copy.deepcopy(pod), result.patch)  # type: ignore[no-any-return]


def caps(pod: dict[str, Any], index: int = 0, field: str = "containers") -> list[str]:
    security = pod["spec"][field][index].get("securityContext") or {}
    return list((security.get("capabilities") or {}).get("add") or [])


def test_pointer_escapes_slash_and_tilde() -> None:
    assert pointer("limits", KVM) == "/limits/devices.kubevirt.io~1kvm"
    assert pointer("a~b/c", 0) == "/a~0b~1c/0"


# --- mutation: a privileged render is rewritten the way KubeVirt v0.7 did it -----------------


def test_privileged_v06_compute_gets_devices_net_admin_and_spc_t() -> None:
    pod = patched(launcher(privileged_compute(), release="v0.6.0"))
    compute = pod["spec"]["containers"][0]
    assert compute["resources"] == {
        "limits": {KVM: "1", TUN: "1"},
        "requests": {KVM: "1", TUN: "1"},
    }
    assert compute["securityContext"] == {
        "runAsUser": 0,
        "privileged": False,
        "capabilities": {"add": ["NET_ADMIN"]},
    }
    # The SELinux domain the privileged container ran in, as v0.7 set it.
    assert pod["spec"]["securityContext"] == {"seLinuxOptions": {"type": "spc_t"}}
    assert found(pod) == []


def test_a_pod_selinux_type_already_set_is_kept() -> None:
    pod = launcher(
        privileged_compute(),
        release="v0.6.0",
        securityContext={"seLinuxOptions": {"type": "container_t", "level": "s0"}},
    )
    assert not any("seLinuxOptions" in op["path"] for op in run_mutate(pod).patch)


@pytest.mark.parametrize(
    "resources",
    [
        None,
        {},
        {"limits": None},
        {"limits": {"memory": "1Gi"}},
        {"requests": {"cpu": "100m"}},
        {"limits": {"memory": "1Gi"}, "requests": {"memory": "1Gi", "cpu": "1"}},
    ],
)
def test_device_requests_are_added_under_whatever_parents_exist(resources: Any) -> None:
    pod = patched(
        launcher(privileged_compute(resources=copy.deepcopy(resources)), release="v0.6.0")
    )
    got = pod["spec"]["containers"][0]["resources"]
    for section in ("limits", "requests"):
        assert got[section][KVM] == "1"
        assert got[section][TUN] == "1"
        for name, value in ((resources or {}).get(section) or {}).items():
            assert got[section][name] == value, "other entries stay untouched"


def test_a_privileged_render_of_a_later_release_loses_privileged_and_gains_devices() -> None:
    # SR-IOV launchers of v0.11 - v0.18 were privileged and requested no kvm themselves.
    pod = patched(launcher(privileged_compute(), release="v0.15.0"))
    compute = pod["spec"]["containers"][0]
    assert compute["securityContext"]["privileged"] is False
    assert compute["resources"]["limits"] == {KVM: "1", TUN: "1"}
    assert caps(pod) == ["NET_ADMIN"]
    assert found(pod) == []


@pytest.mark.parametrize("flag", ["--allow-emulation", "--use-emulation"])
@pytest.mark.parametrize("where", ["command", "args"])
def test_emulated_launcher_gets_tun_but_no_kvm(flag: str, where: str) -> None:
    compute = privileged_compute(**{where: ["/entrypoint.sh", flag]})
    pod = patched(launcher(compute, release="v0.6.0"))
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {TUN: "1"}


def test_emulation_policy_withholds_kvm_from_every_launcher() -> None:
    policy = LauncherPolicy(emulation=True)
    pod = patched(launcher(privileged_compute(), release="v0.6.0"), policy)
    assert KVM not in pod["spec"]["containers"][0]["resources"]["requests"]


# --- mutation: an unprivileged render is never made less able to run -------------------------


def test_current_nonroot_render_is_left_exactly_as_it_is() -> None:
    compute = {
        "name": "compute",
        "securityContext": {
            "runAsUser": 107,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
        },
        "resources": {"limits": {KVM: "1", TUN: "1"}, "requests": {KVM: "1", TUN: "1"}},
    }
    result = run_mutate(launcher(compute))
    assert result.patch == []
    assert result.warnings == []


@pytest.mark.parametrize(
    ("release", "capability"),
    [
        ("v0.10.0", "SYS_NICE"),
        ("v0.30.0", "NET_RAW"),
        ("v0.34.0", "SYS_ADMIN"),
        ("v0.41.0", "SYS_RESOURCE"),
        ("v0.50.0", "SYS_NICE"),
        ("v0.55.0", "SYS_PTRACE"),
        ("v1.9.0", "SYS_NICE"),
    ],
)
def test_compute_keeps_every_capability_its_release_renders(release: str, capability: str) -> None:
    compute = {
        "name": "compute",
        "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", capability]}},
        "resources": {"limits": {KVM: "1"}},
    }
    pod = launcher(compute, release=release)
    after = patched(pod)
    assert capability in caps(after)
    assert "NET_BIND_SERVICE" in caps(after)
    assert found(after) == []


def test_a_capability_outside_baseline_and_the_release_is_removed_with_a_warning() -> None:
    compute = {
        "name": "compute",
        "securityContext": {
            "capabilities": {"add": ["NET_BIND_SERVICE", "SYS_PTRACE", "cap_sys_admin"]}
        },
        "resources": {"limits": {KVM: "1"}},
    }
    result = run_mutate(launcher(compute))
    assert result.patch == [
        {
            "op": "replace",
            "path": "/spec/containers/0/securityContext/capabilities/add",
            "value": ["NET_BIND_SERVICE"],
        }
    ]
    assert result.warnings == [
        "compute: removed capabilities not allowed: SYS_PTRACE,cap_sys_admin"
    ]


def test_the_admins_permitted_capabilities_are_kept() -> None:
    policy = LauncherPolicy(permitted_capabilities=frozenset({"sys_ptrace"}))
    compute = {
        "name": "compute",
        "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}},
        "resources": {"limits": {KVM: "1"}},
    }
    assert run_mutate(launcher(compute), policy).patch == []


def test_net_admin_is_added_only_where_the_release_needs_it() -> None:
    rendered = {"name": "compute", "resources": {"limits": {KVM: "1", TUN: "1"}}}
    old = patched(launcher(copy.deepcopy(rendered), release="v0.20.0"))
    assert caps(old) == ["NET_ADMIN"]
    for release in ("v0.41.0", "v0.50.0", "v1.9.0"):
        assert run_mutate(launcher(copy.deepcopy(rendered), release=release)).patch == []


def test_a_render_that_requests_devices_keeps_exactly_its_requests() -> None:
    compute = {"name": "compute", "resources": {"limits": {KVM: "1"}, "requests": {KVM: "1"}}}
    for release in ("v0.6.0", "v0.50.0", "v1.9.0"):
        assert run_mutate(launcher(copy.deepcopy(compute), release=release)).patch == []


def test_mshv_counts_as_a_hypervisor_request() -> None:
    mshv = "devices.kubevirt.io/mshv"
    compute = privileged_compute(resources={"limits": {mshv: "1", TUN: "1"}})
    after = patched(launcher(compute, release="v0.6.0"))
    assert after["spec"]["containers"][0]["resources"]["limits"] == {mshv: "1", TUN: "1"}


def test_every_other_container_loses_privileged_and_capabilities_beyond_its_role() -> None:
    privileged = {"privileged": True, "capabilities": {"add": ["CHOWN", "SYS_PTRACE"]}}
    pod = launcher(
        {"name": "compute", "resources": {"limits": {KVM: "1"}}},
        {"name": "hook-sidecar-0", "securityContext": copy.deepcopy(privileged)},
        initContainers=[
            {"name": "container-disk-binary", "securityContext": copy.deepcopy(privileged)},
            {"name": "guest-console-log", "restartPolicy": "Always", "securityContext": {}},
        ],
        ephemeralContainers=[{"name": "debug", "securityContext": copy.deepcopy(privileged)}],
    )
    after = patched(pod)
    spec = after["spec"]
    for container in (
        spec["containers"][1],
        spec["initContainers"][0],
        *spec["ephemeralContainers"],
    ):
        assert container["securityContext"]["privileged"] is False
        assert container["securityContext"]["capabilities"]["add"] == ["CHOWN"]
        assert "resources" not in container, "only compute requests devices"
    assert found(after) == []


def test_virtiofs_containers_keep_virtiofsds_set() -> None:
    virtiofsd = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "MKNOD"]
    virtiofs = {
        "name": "virtiofs-disk1",
        "securityContext": {"runAsUser": 0, "capabilities": {"add": [*virtiofsd, "SYS_CHROOT"]}},
    }
    pod = launcher(
        {"name": "compute", "resources": {"limits": {KVM: "1"}}}, virtiofs, release="v0.59.0"
    )
    assert run_mutate(pod).patch == []
    assert found(pod) == []


def test_container_without_security_context_outside_compute_is_left_alone() -> None:
    pod = launcher(privileged_compute(), {"name": "sidecar", "image": "x"}, release="v0.6.0")
    assert not any("/containers/1" in op["path"] for op in run_mutate(pod).patch)


def test_launcher_without_compute_requests_nothing_with_a_warning() -> None:
    result = run_mutate(launcher({"name": "qemu", "image": "q"}))
    assert result.patch == []
    assert result.warnings == ["launcher pod has no 'compute' container: no devices requested"]


def test_launcher_without_compute_still_loses_privileges() -> None:
    pod = launcher({"name": "qemu", "securityContext": {"privileged": True}})
    after = patched(pod)
    assert after["spec"]["containers"][0] == {
        "name": "qemu",
        "securityContext": {"privileged": False},
    }
    assert found(after) == []


def test_configured_compute_name() -> None:
    policy = LauncherPolicy(compute_container="vm")
    pod = launcher(
        {"name": "compute"},
        {"name": "vm", "image": IMAGE.format("v0.6.0"), "securityContext": {"privileged": True}},
    )
    after = patched(pod, policy)
    assert "resources" not in after["spec"]["containers"][0]
    assert after["spec"]["containers"][1]["resources"]["limits"] == {KVM: "1", TUN: "1"}
    assert caps(after, 1) == ["NET_ADMIN"]
    assert found(after, policy) == []


def test_mutation_is_idempotent_on_its_own_output() -> None:
    compute = privileged_compute()
    compute["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN", "NET_ADMIN", "NET_ADMIN"]}
    pod = launcher(
        compute,
        initContainers=[{"name": "init", "securityContext": {"privileged": True}}],
        release="v0.6.0",
    )
    once = patched(pod)
    assert run_mutate(once).patch == []


def test_warnings_fit_the_api_servers_limit() -> None:
    many = [f"VERY_LONG_CAPABILITY_NAME_{i}" for i in range(20)]
    pod = launcher(
        {"name": "c" * 200, "securityContext": {"capabilities": {"add": many}}},
        {"name": "compute", "resources": {"limits": {KVM: "1"}}},
    )
    result = run_mutate(pod)
    assert result.warnings
    assert all(len(warning) <= 120 for warning in result.warnings)


def test_only_ascii_capability_spellings_are_folded() -> None:
    spelled = "net_b\u0131nd_service"  # a dotless i: upper() would make it NET_BIND_SERVICE
    pod = launcher(
        {
            "name": "compute",
            "securityContext": {"capabilities": {"add": [spelled]}},
            "resources": {"limits": {KVM: "1"}},
        }
    )
    assert paths(pod) == ["spec.containers[0].securityContext.capabilities.add[0]"]
    assert caps(patched(pod)) == []


# --- validation: Pod Security baseline, each violation with its path and value -------------


def test_every_baseline_violation_is_listed_with_its_field_path_and_value() -> None:
    pod = launcher(
        {
            "name": "compute",
            "resources": {"limits": {KVM: "1"}},
            "ports": [{"containerPort": 80, "hostPort": 8080}],
            "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
            "lifecycle": {"preStop": {"tcpSocket": {"host": "metadata", "port": 80}}},
            "securityContext": {
                "capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN"]},
                "seccompProfile": {"type": "Unconfined"},
                "appArmorProfile": {"type": "Unconfined"},
                "procMount": "Unmasked",
                "seLinuxOptions": {"type": "spc_t", "user": "system_u", "role": "system_r"},
                "windowsOptions": {"hostProcess": True},
            },
        },
        initContainers=[{"name": "init", "securityContext": {"privileged": True}}],
        ephemeralContainers=[{"name": "debug", "securityContext": {"privileged": True}}],
        hostPID=True,
        hostIPC=True,
        hostNetwork=True,
        securityContext={
            "seccompProfile": {"type": "Unconfined"},
            "sysctls": [{"name": "kernel.shm_rmid_forced"}, {"name": "net.core.somaxconn"}],
        },
        volumes=[{"name": "root", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}],
    )
    pod["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/compute": "unconfined"
    }
    shown = [str(v) for v in found(pod)]
    assert [s.split(" (")[0] for s in shown] == [
        "spec.hostPID: true",
        "spec.hostIPC: true",
        "spec.hostNetwork: true",
        "spec.securityContext.seccompProfile.type: Unconfined",
        "spec.securityContext.sysctls[1].name: net.core.somaxconn",
        "metadata.annotations[container.apparmor.security.beta.kubernetes.io/compute]: unconfined",
        "spec.volumes[0].hostPath.path: /",
        "spec.containers[0].securityContext.capabilities.add[1]: SYS_ADMIN",
        "spec.containers[0].securityContext.seLinuxOptions.type: spc_t",
        "spec.containers[0].securityContext.seLinuxOptions.user: system_u",
        "spec.containers[0].securityContext.seLinuxOptions.role: system_r",
        "spec.containers[0].securityContext.seccompProfile.type: Unconfined",
        "spec.containers[0].securityContext.appArmorProfile.type: Unconfined",
        "spec.containers[0].securityContext.windowsOptions.hostProcess: true",
        "spec.containers[0].securityContext.procMount: Unmasked",
        "spec.containers[0].ports[0].hostPort: 8080",
        "spec.containers[0].livenessProbe.httpGet.host: 10.0.0.1",
        "spec.containers[0].lifecycle.preStop.tcpSocket.host: metadata",
        "spec.initContainers[0].securityContext.privileged: true",
        "spec.ephemeralContainers[0].securityContext.privileged: true",
    ]


def test_what_baseline_allows_passes() -> None:
    pod = launcher(
        {
            "name": "compute",
            "resources": {"limits": {KVM: "1"}},
            "ports": [{"containerPort": 80, "hostPort": 0}],
            "readinessProbe": {"httpGet": {"port": 80, "host": ""}},
            "securityContext": {
                "privileged": False,
                "capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN", "SYS_CHROOT"]},
                "seccompProfile": {"type": "RuntimeDefault"},
                "appArmorProfile": {"type": "Localhost", "localhostProfile": "k"},
                "procMount": "Default",
                "seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"},
            },
        },
        hostPID=False,
        securityContext={"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]},
        volumes=[{"name": "d", "emptyDir": {}}],
    )
    pod["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/compute": "runtime/default"
    }
    assert found(pod) == []


def test_unmasked_proc_is_allowed_in_a_user_namespace() -> None:
    compute = {"name": "compute", "securityContext": {"procMount": "Unmasked"}}
    assert paths(launcher(copy.deepcopy(compute))) == [
        "spec.containers[0].securityContext.procMount"
    ]
    assert paths(launcher(compute, hostUsers=False)) == []


def test_privileged_is_never_an_exception_even_where_the_release_rendered_it() -> None:
    for release in ("v0.6.0", "v0.15.0", "v1.5.0"):
        assert paths(launcher(privileged_compute(), release=release)) == [
            "spec.containers[0].securityContext.privileged"
        ]


@pytest.mark.parametrize(
    ("capability", "allowed_in", "denied_in"),
    [
        ("SYS_PTRACE", "v0.53.0", "v1.9.0"),
        ("NET_RAW", "v0.30.0", "v0.36.0"),
        ("NET_ADMIN", "v0.40.0", None),  # compute always may: virtdev grants it itself
        ("SYS_RESOURCE", "v0.20.0", "v0.21.0"),
        ("SYS_ADMIN", "v0.34.0", "v0.58.0"),
    ],
)
def test_compute_capabilities_follow_the_release(
    capability: str, allowed_in: str, denied_in: str | None
) -> None:
    compute = {"name": "compute", "securityContext": {"capabilities": {"add": [capability]}}}
    assert paths(launcher(copy.deepcopy(compute), release=allowed_in)) == []
    if denied_in is not None:
        [violation] = found(launcher(compute, release=denied_in))
        assert violation.value == capability
        profile = profiles.profile_for(profiles.parse_version(denied_in) or (0, 0))
        assert f"KubeVirt {profile.name} adds to compute containers only" in violation.reason


def test_release_exceptions_belong_to_their_role() -> None:
    # SYS_NICE is compute's in a root launcher, not a sidecar's.
    sidecar = {"name": "hook-sidecar-0", "securityContext": {"capabilities": {"add": ["SYS_NICE"]}}}
    pod = launcher({"name": "compute"}, sidecar)
    assert paths(pod) == ["spec.containers[1].securityContext.capabilities.add[0]"]


@pytest.mark.parametrize(
    ("release", "path", "allowed"),
    [
        ("v0.6.0", "/var/run/kubevirt", True),
        ("v0.20.0", "/var/run/kubevirt/container-disks/8f1e", True),
        # Only the pod's own VMI's directory (its created-by label): not another VM's, not
        # anything below, where another launcher may have planted a symlink.
        ("v0.20.0", "/var/run/kubevirt/container-disks/0bad", False),
        ("v0.20.0", "/var/run/kubevirt/container-disks/8f1e/disk_0.img", False),
        ("v0.20.0", "/var/run/kubevirt/container-disks", False),
        ("v0.20.0", "/var/lib/kubevirt/init/usr/bin/", True),
        ("v0.20.0", "/var/lib/kubevirt", False),
        ("v0.15.0", "/dev/vfio", True),
        ("v0.30.0", "/var/run/kubevirt", False),
        ("v1.9.0", "/var/run/kubevirt", False),
        ("v1.9.0", "/", False),
        ("v1.9.0", "//etc", False),
        ("v0.20.0", "/var/run/kubevirt/container-disks/../../../etc", False),
    ],
)
def test_host_paths_are_the_releases_own(release: str, path: str, allowed: bool) -> None:
    pod = launcher(
        {"name": "compute"}, release=release, volumes=[{"name": "h", "hostPath": {"path": path}}]
    )
    pod["metadata"]["labels"]["kubevirt.io/created-by"] = "8f1e"  # the VMI's uid
    assert (paths(pod) == []) is allowed


def test_the_admin_permits_host_path_prefixes_component_by_component() -> None:
    policy = LauncherPolicy(permitted_host_paths=("/var/lib/vm-disks/",))

    def allowed(path: str) -> bool:
        pod = launcher({"name": "compute"}, volumes=[{"name": "h", "hostPath": {"path": path}}])
        return paths(pod, policy) == []

    assert allowed("/var/lib/vm-disks")
    assert allowed("/var/lib/vm-disks/vm1")
    assert not allowed("/var/lib/vm-disks-other")
    assert not allowed("/var/lib/vm-disks/../../../etc")


def test_selinux_types_are_the_releases_or_the_admins() -> None:
    def pod(release: str, kind: str) -> dict[str, Any]:
        return launcher(
            {"name": "compute"},
            release=release,
            securityContext={"seLinuxOptions": {"type": kind}},
        )

    assert paths(pod("v0.20.0", "spc_t")) == []
    assert paths(pod("v0.50.0", "virt_launcher.process")) == []
    assert paths(pod("v1.9.0", "spc_t")) == ["spec.securityContext.seLinuxOptions.type"]
    assert paths(pod("v1.9.0", "virt_launcher.process")) == [
        "spec.securityContext.seLinuxOptions.type"
    ]
    policy = LauncherPolicy(selinux_types=frozenset({"virt_launcher.process"}))
    assert paths(pod("v1.9.0", "virt_launcher.process"), policy) == []


def test_update_denies_only_what_the_old_object_did_not_have() -> None:
    old = launcher(privileged_compute(), release="v0.6.0")
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"]["extra"] = "x"

    def new(pod: dict[str, Any]) -> list[str]:
        current = read_launcher(pod, DEFAULT)
        before = read_launcher(old, DEFAULT, release=current.release)
        return [v.path for v in new_violations(current, before, DEFAULT)]

    assert new(relabelled) == []
    debugged = copy.deepcopy(old)
    debugged["spec"]["ephemeralContainers"] = [
        {"name": "dbg", "securityContext": {"privileged": True}}
    ]
    assert new(debugged) == ["spec.ephemeralContainers[0].securityContext.privileged"]


def test_device_warning_for_compute_without_a_hypervisor_device() -> None:
    bare = launcher({"name": "compute"})
    assert device_warnings(read_launcher(bare, DEFAULT)) == [
        f"spec.containers[0] requests no {KVM}: the VM may lack KVM"
    ]
    assert device_warnings(read_launcher(bare, LauncherPolicy(emulation=True))) == []
    emulated = launcher({"name": "compute", "command": ["virt-launcher", "--allow-emulation"]})
    assert device_warnings(read_launcher(emulated, DEFAULT)) == []


# --- which profile judges a pod ------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "profile", "why"),
    [
        ("quay.io/kubevirt/virt-launcher:v0.59.2", "v0.59-v1.2", "image tag v0.59"),
        ("docker.io/kubevirt/virt-launcher:v0.20.0-rc.1", "v0.20", "image tag v0.20"),
        ("registry:5000/kubevirt/virt-launcher:v0.50.0@sha256:" + "a" * 64, "v0.47-v0.52", "v0.50"),
        ("quay.io/kubevirt/virt-launcher:v3.0.0", "v1.7+", "newer than the newest known"),
        ("quay.io/kubevirt/virt-launcher@sha256:" + "b" * 64, "v1.7+", "pinned by digest"),
        ("registry:5000/kubevirt/virt-launcher", "v1.7+", "pinned by digest or untagged"),
        ("quay.io/kubevirt/virt-launcher:latest", "v1.7+", "pinned by digest or untagged"),
        ("example.com/other/launcher:v0.6.0", "v1.7+", "no virt-launcher image tag"),
    ],
)
def test_auto_reads_the_release_from_the_launcher_image(image: str, profile: str, why: str) -> None:
    pod = launcher({"name": "compute", "image": image})
    release = read_launcher(pod, DEFAULT).release
    assert release.profile.name == profile
    assert why in release.describe()


def test_an_explicit_version_wins_over_the_image() -> None:
    policy = LauncherPolicy(kubevirt_version=(0, 53))
    release = read_launcher(launcher({"name": "compute"}), policy).release
    assert release.profile.name == "v0.53"
    assert release.describe() == "KubeVirt v0.53 profile, --kubevirt-version v0.53"
    assert profiles.profile_for((1, 0)).name == "v0.59-v1.2"


def test_profiles_are_ordered_and_every_row_cites_its_source() -> None:
    since = [profile.since for profile in profiles.PROFILES]
    assert since == sorted(set(since))
    for profile in profiles.PROFILES:
        assert "@v" in profile.source, profile.name
        assert set(profile.capabilities) <= set(profiles.ROLES)
        assert profile.privileged <= set(profiles.ROLES)
    assert profiles.profile_for((0, 3)).name == "<=v0.6"
    assert profiles.profile_for((0, 45)).name == "v0.44-v0.46"
    assert profiles.profile_for((0, 50)).name == "v0.47-v0.52"


def test_policy_from_flags() -> None:
    parser = argparse.ArgumentParser()
    add_launcher_policy_flags(parser)
    args = parser.parse_args(
        [
            "--launcher-selector",
            "app=vm",
            "--permitted-capabilities",
            "net_raw",
            "--kubevirt-version",
            "v0.50.1",
            "--permitted-host-paths",
            "/data/vms/,/srv//disks",
            "--selinux-launcher-types",
            "virt_launcher.process",
        ]
    )
    policy = launcher_policy(args)
    assert policy.is_launcher({"metadata": {"labels": {"app": "vm"}}})
    assert not policy.is_launcher({"metadata": {"labels": {"kubevirt.io": "virt-launcher"}}})
    assert policy.permitted_capabilities == frozenset({"NET_RAW"})
    assert policy.kubevirt_version == (0, 50)
    assert policy.permitted_host_paths == ("/data/vms", "/srv/disks")
    assert policy.selinux_types == frozenset({"virt_launcher.process"})
    assert launcher_policy(parser.parse_args([])).kubevirt_version is None
    for bad, message in (
        (["--launcher-selector", "novalue"], "expected KEY=VALUE"),
        (["--devices", "kvm,gpu"], "unknown device"),
        (["--kubevirt-version", "latest"], "expected auto or vX.Y"),
        (["--permitted-host-paths", "data"], "expected an absolute path"),
    ):
        with pytest.raises(ValueError, match=message):
            launcher_policy(parser.parse_args(bad))


# --- /guard: baseline for every pod of a guarded namespace ------------------------------------


def created(pod: dict[str, Any], username: str = catalogue.KUBEVIRT_CONTROLLERS[0]) -> Request:
    """The CREATE review the API server sends when `username` (by default KubeVirt's
    controller) creates a pod in namespace `vms`."""
    request = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "userInfo": {"username": username},
        "namespace": "vms",
        "object": pod,
    }
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return review.parse(orjson.dumps(body))


def guard(pod: dict[str, Any], policy: LauncherPolicy = DEFAULT) -> Answer:
    return guard_review(created(pod), policy)


def test_guard_gives_other_pods_none_of_the_launcher_exceptions() -> None:
    policy = LauncherPolicy(
        permitted_capabilities=frozenset({"SYS_PTRACE"}),
        permitted_host_paths=("/data",),
        selinux_types=frozenset({"virt_launcher.process"}),
    )
    pod = {
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "compute",
                    "image": IMAGE.format("v0.20.0"),
                    "securityContext": {
                        "capabilities": {"add": ["NET_ADMIN", "SYS_PTRACE", "CHOWN"]},
                        "seLinuxOptions": {"type": "virt_launcher.process"},
                    },
                }
            ],
            "volumes": [{"name": "d", "hostPath": {"path": "/data/x"}}],
        },
    }
    answer = guard(pod, policy)
    assert not answer.allowed
    assert answer.audit_annotations["violations"] == "; ".join(
        [
            "spec.volumes[0].hostPath.path",
            "spec.containers[0].securityContext.capabilities.add[0]",
            "spec.containers[0].securityContext.capabilities.add[1]",
            "spec.containers[0].securityContext.seLinuxOptions.type",
        ]
    )
    assert answer.message.startswith(
        "pod vms/web refused by virtdev (Pod Security baseline latest (v1.37), "
    )


def test_guard_judges_a_launcher_exactly_as_validate_does() -> None:
    pod = launcher({"name": "compute", "securityContext": {"capabilities": {"add": ["SYS_NICE"]}}})
    assert guard(pod).allowed
    pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")
    answer = guard(pod)
    assert not answer.allowed
    assert answer.message.startswith("launcher pod ")
    assert validate_review(created(pod), DEFAULT) == answer


def test_guard_judges_kubevirts_hotplug_pods_by_their_release() -> None:
    render = Path(__file__).parents[2] / "fixtures" / "kubevirt" / "hotplug-v1.9.0.yaml"
    pod = yaml.safe_load(render.read_text(encoding="utf-8"))
    assert guard(pod).allowed, guard(pod).message
    # v0.36 - v0.46 rendered the attachment pod on the host's network: theirs to keep.
    on_host = copy.deepcopy(pod)
    on_host["spec"]["hostNetwork"] = True
    assert not guard(on_host).allowed
    assert guard(on_host).audit_annotations["violations"] == "spec.hostNetwork"
    for container in on_host["spec"]["containers"]:
        container["image"] = IMAGE.format("v0.41.0")
    assert guard(on_host).allowed
    assert guard(on_host).audit_annotations["profile"].startswith("KubeVirt v0.41 profile")
    # The same on any other pod is refused, whatever image it runs.
    on_host["metadata"]["labels"]["kubevirt.io"] = "something-else"
    assert not guard(on_host).allowed
