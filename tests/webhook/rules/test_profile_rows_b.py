"""The profile rows of KubeVirt v0.29 - v0.41 hold exactly what those releases render.

`test_kubevirt_renders.py` proves each row allows its own renders; these tests prove the rows
allow nothing their releases do not render, one step at a time: what a render of the row before
or after lacks is refused on it. Every pod here is a render from `tests/fixtures/kubevirt/`.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.webhook.conftest import RENDERS
from webhook.admission import guard_review, validate_review
from webhook.rules.policy import LauncherPolicy
from webhook.serving.review import as_request


def load(name: str) -> dict[str, Any]:
    pod: dict[str, Any] = yaml.safe_load((RENDERS / name).read_text(encoding="utf-8"))
    return pod


def compute_of(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "compute")


@pytest.mark.parametrize(
    ("name", "capability", "allowed"),
    [
        ("v0.33.0.yaml", "SYS_ADMIN", False),  # virtiofs arrives in v0.34
        ("v0.34.0.yaml", "SYS_ADMIN", True),
        ("v0.37.0.yaml", "SYS_RESOURCE", False),  # SRIOVLiveMigration arrives in v0.39
        ("v0.39.0.yaml", "SYS_RESOURCE", True),
        ("v0.39.0.yaml", "NET_ADMIN", True),
        ("v0.41.0.yaml", "NET_ADMIN", False),  # gone in v0.41
        ("v0.41.0.yaml", "SYS_PTRACE", False),  # arrives in v0.53
    ],
)
def test_a_capability_is_allowed_only_from_the_release_that_renders_it(
    name: str, capability: str, allowed: bool
) -> None:
    pod = load(name)
    adds = compute_of(pod)["securityContext"]["capabilities"]["add"]
    adds.append(capability)
    answer = validate_review(as_request(pod), LauncherPolicy())
    assert answer.allowed is allowed, answer.message
    if not allowed:
        path = f"spec.containers[0].securityContext.capabilities.add[{len(adds) - 1}]"
        assert f"{path}: {capability}" in answer.message


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("v0.29.0.yaml", True),  # SR-IOV or GPU VMIs: template.go@v0.29.0:362-378
        ("v0.33.0.yaml", True),
        ("v0.34.0.yaml", True),
        ("v0.37.0.yaml", False),  # gone: template.go@v0.37.0:340-374
        ("v0.39.0.yaml", False),
        ("v0.41.0.yaml", False),
    ],
)
def test_sys_devices_is_mounted_until_v036_only(name: str, allowed: bool) -> None:
    pod = load(name)
    volumes = pod["spec"]["volumes"]
    volumes.append({"name": "pci-devices", "hostPath": {"path": "/sys/devices/"}})
    answer = validate_review(as_request(pod), LauncherPolicy())
    assert answer.allowed is allowed, answer.message
    if not allowed:
        assert f"spec.volumes[{len(volumes) - 1}].hostPath.path: /sys/devices/" in answer.message


def test_the_sriov_render_of_v029_loses_its_host_path_on_v037() -> None:
    pod = load("v0.29.0-sriov.yaml")
    assert validate_review(as_request(pod), LauncherPolicy()).allowed
    for container in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        container["image"] = container["image"].replace(":v0.29.0", ":v0.37.0")
    answer = validate_review(as_request(pod), LauncherPolicy())
    assert not answer.allowed
    assert "hostPath.path: /sys/devices/" in answer.message


def test_virt_launcher_process_is_the_pod_type_from_v033_not_on_v029() -> None:
    pod = load("v0.29.0.yaml")
    pod["spec"]["securityContext"]["seLinuxOptions"] = {"type": "virt_launcher.process"}
    answer = validate_review(as_request(pod), LauncherPolicy())
    assert not answer.allowed
    assert "spec.securityContext.seLinuxOptions.type: virt_launcher.process" in answer.message
    # ... unless the admin configured it, as KubeVirt's selinuxLauncherType.
    configured = LauncherPolicy(selinux_types=frozenset({"virt_launcher.process"}))
    assert validate_review(as_request(pod), configured).allowed
    assert validate_review(as_request(load("v0.33.0.yaml")), LauncherPolicy()).allowed


def test_the_v041_hotplug_pod_on_the_hosts_network_is_kubevirts_own() -> None:
    pod = load("hotplug-v0.41.0.yaml")
    assert pod["spec"]["hostNetwork"] is True
    answer = guard_review(as_request(pod), LauncherPolicy())
    assert answer.allowed, answer.message
    assert answer.audit_annotations["profile"].startswith("KubeVirt v0.41 profile")
    # v0.47 renders it on the pod network: the same pod tagged v0.47 is refused.
    pod["spec"]["containers"][0]["image"] = "quay.io/kubevirt/virt-launcher:v0.47.0"
    answer = guard_review(as_request(pod), LauncherPolicy())
    assert not answer.allowed
    assert "spec.hostNetwork: true" in answer.message
