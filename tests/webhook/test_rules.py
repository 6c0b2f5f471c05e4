"""The pure rules: what /mutate patches and what /validate refuses, without any server."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from webhook.mutation import mutate, pointer
from webhook.policy import LauncherPolicy
from webhook.validation import device_warnings, new_violations, violations

KVM, TUN = "devices.kubevirt.io/kvm", "devices.kubevirt.io/tun"
DEFAULT = LauncherPolicy()


def launcher(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "generateName": "virt-launcher-vm-",
            "labels": {"kubevirt.io": "virt-launcher"},
        },
        "spec": {"containers": list(containers), **spec},
    }


def patched(pod: dict[str, Any], policy: LauncherPolicy = DEFAULT, **kw: Any) -> dict[str, Any]:
    result = mutate(pod, policy, **kw)
    return jsonpatch.apply_patch(copy.deepcopy(pod), result.patch)  # type: ignore[no-any-return]


def test_pointer_escapes_slash_and_tilde() -> None:
    assert pointer("limits", KVM) == "/limits/devices.kubevirt.io~1kvm"
    assert pointer("a~b/c", 0) == "/a~0b~1c/0"


def test_bare_compute_gets_devices_privileged_false_and_net_admin() -> None:
    pod = patched(launcher({"name": "compute"}))
    compute = pod["spec"]["containers"][0]
    assert compute["resources"] == {
        "limits": {KVM: "1", TUN: "1"},
        "requests": {KVM: "1", TUN: "1"},
    }
    assert compute["securityContext"] == {
        "privileged": False,
        "capabilities": {"add": ["NET_ADMIN"]},
    }


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
    pod = patched(launcher({"name": "compute", "resources": copy.deepcopy(resources)}))
    got = pod["spec"]["containers"][0]["resources"]
    for section in ("limits", "requests"):
        assert got[section][KVM] == "1"
        assert got[section][TUN] == "1"
        for name, value in ((resources or {}).get(section) or {}).items():
            assert got[section][name] == value, "other entries stay untouched"


def test_another_device_count_is_set_to_one_with_a_warning() -> None:
    pod = launcher({"name": "compute", "resources": {"limits": {KVM: "2", TUN: "1"}}})
    result = mutate(pod, DEFAULT)
    assert {
        "op": "replace",
        "path": f"/spec/containers/0/resources/limits/{KVM.replace('/', '~1')}",
        "value": "1",
    } in result.patch
    assert any("'2'" in warning and KVM in warning for warning in result.warnings)


def test_numeric_one_counts_as_one() -> None:
    pod = launcher(
        {
            "name": "compute",
            "resources": {"limits": {KVM: 1, TUN: 1}, "requests": {KVM: 1, TUN: 1}},
            "securityContext": {"privileged": False, "capabilities": {"add": ["NET_ADMIN"]}},
        }
    )
    assert mutate(pod, DEFAULT).patch == []


@pytest.mark.parametrize("flag", ["--allow-emulation", "--use-emulation"])
@pytest.mark.parametrize("where", ["command", "args"])
def test_emulated_launcher_gets_tun_but_no_kvm(flag: str, where: str) -> None:
    pod = patched(launcher({"name": "compute", where: ["virt-launcher", flag]}))
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {TUN: "1"}


def test_emulation_policy_withholds_kvm_from_every_launcher() -> None:
    policy = LauncherPolicy(emulation=True)
    pod = patched(launcher({"name": "compute"}), policy)
    assert KVM not in pod["spec"]["containers"][0]["resources"]["requests"]


def test_compute_keeps_permitted_capabilities_and_drop_and_loses_the_rest() -> None:
    policy = LauncherPolicy(permitted_capabilities=frozenset({"NET_ADMIN", "NET_BIND_SERVICE"}))
    security = {
        "runAsUser": 107,
        "capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN", "cap_net_raw"], "drop": ["ALL"]},
    }
    pod = patched(launcher({"name": "compute", "securityContext": security}), policy)
    got = pod["spec"]["containers"][0]["securityContext"]
    assert got["capabilities"] == {"add": ["NET_BIND_SERVICE", "NET_ADMIN"], "drop": ["ALL"]}
    assert got["runAsUser"] == 107
    assert got["privileged"] is False


def test_only_ascii_capability_spellings_are_folded() -> None:
    pod = launcher(
        {"name": "compute", "securityContext": {"capabilities": {"add": ["net_adm\u0131n"]}}}
    )
    assert [v.path for v in violations(pod, DEFAULT)] == [
        "spec.containers[0].securityContext.capabilities.add[0]"
    ]
    capabilities = patched(pod)["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert capabilities["add"] == ["NET_ADMIN"]


def test_capability_spellings_are_compared_normalised() -> None:
    pod = launcher(
        {
            "name": "compute",
            "securityContext": {"privileged": False, "capabilities": {"add": ["CAP_NET_ADMIN"]}},
            "resources": {"limits": {KVM: "1", TUN: "1"}, "requests": {KVM: "1", TUN: "1"}},
        }
    )
    assert mutate(pod, DEFAULT).patch == []


def test_every_other_container_loses_privileged_and_unpermitted_capabilities() -> None:
    privileged = {"privileged": True, "capabilities": {"add": ["NET_ADMIN", "SYS_PTRACE"]}}
    pod = launcher(
        {"name": "compute"},
        {"name": "sidecar", "securityContext": copy.deepcopy(privileged)},
        initContainers=[
            {"name": "init", "securityContext": copy.deepcopy(privileged)},
            {"name": "console", "restartPolicy": "Always", "securityContext": {"privileged": True}},
        ],
        ephemeralContainers=[{"name": "debug", "securityContext": copy.deepcopy(privileged)}],
    )
    after = patched(pod)
    spec = after["spec"]
    others = [spec["containers"][1], *spec["initContainers"], *spec["ephemeralContainers"]]
    for container in others:
        assert container["securityContext"].get("privileged") is False
        assert container["securityContext"].get("capabilities", {}).get("add", []) in (
            [],
            ["NET_ADMIN"],
        )
        assert "resources" not in container, "only compute requests devices"
    assert violations(after, DEFAULT) == []


def test_container_without_security_context_outside_compute_is_left_alone() -> None:
    pod = launcher({"name": "compute"}, {"name": "sidecar", "image": "x"})
    assert not any("/containers/1" in op["path"] for op in mutate(pod, DEFAULT).patch)


def test_launcher_without_compute_requests_nothing_with_a_warning() -> None:
    result = mutate(launcher({"name": "qemu", "image": "q"}), DEFAULT)
    assert result.patch == []
    assert result.warnings == ["launcher pod has no 'compute' container: no devices requested"]


def test_launcher_without_compute_still_loses_privileges() -> None:
    pod = launcher({"name": "qemu", "securityContext": {"privileged": True}})
    after = patched(pod)
    assert after["spec"]["containers"][0] == {
        "name": "qemu",
        "securityContext": {"privileged": False},
    }
    assert violations(after, DEFAULT) == []


def test_configured_compute_name_and_required_capabilities() -> None:
    policy = LauncherPolicy(compute_container="vm", required_capabilities=("NET_ADMIN", "SYS_NICE"))
    pod = patched(launcher({"name": "compute"}, {"name": "vm"}), policy)
    assert "resources" not in pod["spec"]["containers"][0]
    assert pod["spec"]["containers"][1]["securityContext"]["capabilities"]["add"] == [
        "NET_ADMIN",
        "SYS_NICE",
    ]
    assert violations(pod, policy) == [], "required capabilities are always permitted"


def test_mutation_is_idempotent_on_its_own_output() -> None:
    pod = launcher(
        {
            "name": "compute",
            "securityContext": {
                "privileged": True,
                "capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN", "NET_ADMIN"]},
            },
        },
        initContainers=[{"name": "init", "securityContext": {"privileged": True}}],
    )
    once = patched(pod)
    assert mutate(once, DEFAULT).patch == []


def test_warnings_fit_the_api_servers_limit() -> None:
    caps = [f"VERY_LONG_CAPABILITY_NAME_{i}" for i in range(20)]
    pod = launcher(
        {"name": "c" * 200, "securityContext": {"capabilities": {"add": caps}}}, {"name": "compute"}
    )
    result = mutate(pod, DEFAULT)
    assert result.warnings
    assert all(len(warning) <= 120 for warning in result.warnings)


# --- validation ---------------------------------------------------------------------------


def test_every_violation_is_listed_with_its_field_path() -> None:
    pod = launcher(
        {
            "name": "compute",
            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]}},
        },
        initContainers=[{"name": "init", "securityContext": {"privileged": True}}],
        ephemeralContainers=[{"name": "debug", "securityContext": {"privileged": True}}],
        hostPID=True,
        hostIPC=True,
        hostNetwork=True,
    )
    paths = [v.path for v in violations(pod, DEFAULT)]
    assert paths == [
        "spec.hostPID",
        "spec.hostIPC",
        "spec.hostNetwork",
        "spec.containers[0].securityContext.capabilities.add[1]",
        "spec.initContainers[0].securityContext.privileged",
        "spec.ephemeralContainers[0].securityContext.privileged",
    ]
    assert "SYS_ADMIN" in str(violations(pod, DEFAULT)[3])


def test_privileged_false_and_permitted_capabilities_pass() -> None:
    pod = launcher(
        {
            "name": "compute",
            "securityContext": {"privileged": False, "capabilities": {"add": ["NET_ADMIN"]}},
        },
        hostPID=False,
    )
    assert violations(pod, DEFAULT) == []


def test_update_denies_only_what_the_old_object_did_not_have() -> None:
    old = launcher({"name": "compute", "securityContext": {"privileged": True}})
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"]["extra"] = "x"
    assert new_violations(relabelled, old, DEFAULT) == []
    debugged = copy.deepcopy(old)
    debugged["spec"]["ephemeralContainers"] = [
        {"name": "dbg", "securityContext": {"privileged": True}}
    ]
    found = new_violations(debugged, old, DEFAULT)
    assert [v.path for v in found] == ["spec.ephemeralContainers[0].securityContext.privileged"]


def test_device_warning_for_compute_without_requests() -> None:
    warnings = device_warnings(launcher({"name": "compute"}), DEFAULT)
    assert warnings == [f"spec.containers[0] does not request {KVM}, {TUN}; the VM may lack KVM"]
    assert device_warnings(patched(launcher({"name": "compute"})), DEFAULT) == []


def test_launcher_selector_from_flags_must_be_key_value() -> None:
    import argparse

    from virtdev.config import add_launcher_policy_flags

    parser = argparse.ArgumentParser()
    add_launcher_policy_flags(parser)
    args = parser.parse_args(
        ["--launcher-selector", "app=vm", "--permitted-capabilities", "net_raw"]
    )
    policy = LauncherPolicy.from_args(args)
    assert policy.is_launcher({"metadata": {"labels": {"app": "vm"}}})
    assert not policy.is_launcher({"metadata": {"labels": {"kubevirt.io": "virt-launcher"}}})
    assert policy.permitted_capabilities == frozenset({"NET_RAW", "NET_ADMIN"})
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        LauncherPolicy.from_args(parser.parse_args(["--launcher-selector", "novalue"]))
    with pytest.raises(ValueError, match="unknown device"):
        LauncherPolicy.from_args(parser.parse_args(["--devices", "kvm,gpu"]))
