"""The profile rows v0.42 - v1.5 against what their releases' template code renders.

Each test starts from a render in `tests/fixtures/kubevirt/` (the row's first release, every field
cited there) and checks what the render alone does not: where a row ends, the release before or
after it refuses what the row allows, or allows what the row refuses.
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.webhook.conftest import RENDERS
from webhook.admission import validate_review
from webhook.rules.policy import LauncherPolicy
from webhook.serving.review import as_request


def render(name: str, *, release: str = "") -> dict[str, Any]:
    """A render, its launcher images retagged to `release` (another release) if given."""
    pod: dict[str, Any] = yaml.safe_load((RENDERS / name).read_text(encoding="utf-8"))
    if release:
        for field in ("containers", "initContainers"):
            for container in pod["spec"].get(field) or ():
                repository, _, _ = container["image"].rpartition(":")
                if repository.endswith("/virt-launcher"):
                    container["image"] = f"{repository}:{release}"
    return pod


def compute_adds(pod: dict[str, Any]) -> list[str]:
    compute = next(c for c in pod["spec"]["containers"] if c["name"] == "compute")
    adds: list[str] = compute["securityContext"]["capabilities"]["add"]
    return adds


def refusal(pod: dict[str, Any]) -> str:
    answer = validate_review(as_request(pod), LauncherPolicy())
    return "" if answer.allowed else answer.message


def test_sys_resource_is_refused_from_v042_on() -> None:
    # SRIOVLiveMigration's SYS_RESOURCE: template.go@v0.41.0:1429-1448, gone at @v0.42.0:1453-1466.
    pod = render("v0.42.0-virtiofs.yaml")
    compute_adds(pod).append("SYS_RESOURCE")
    assert "capabilities.add[10]: SYS_RESOURCE" in refusal(pod)
    older = render("v0.42.0-virtiofs.yaml", release="v0.41.0")
    compute_adds(older).append("SYS_RESOURCE")
    assert refusal(older) == ""


def test_sys_ptrace_is_allowed_from_v053_only() -> None:
    # template.go@v0.53.0:1798-1816 adds it always; v0.44 - v0.52 never render it.
    assert refusal(render("v0.53.0-virtiofs.yaml")) == ""
    assert "SYS_PTRACE" in refusal(render("v0.53.0-virtiofs.yaml", release="v0.52.0"))
    pod = render("v0.44.0-hook-sidecar.yaml")
    compute_adds(pod).append("SYS_PTRACE")
    assert "capabilities.add[2]: SYS_PTRACE" in refusal(pod)


def test_virtiofs_in_compute_is_allowed_until_v057_and_refused_from_v058() -> None:
    # rendercontainer.go@v0.57.0:247-250 still gives compute SYS_ADMIN and virtiofsd's set;
    # from v0.58 virtiofsd runs in its own container (virtiofs.go@v0.58.0:98-125).
    assert refusal(render("v0.54.0-virtiofs-hook-sidecar.yaml", release="v0.57.0")) == ""
    message = refusal(render("v0.54.0-virtiofs-hook-sidecar.yaml", release="v0.58.0"))
    assert "capabilities.add[3]: SYS_ADMIN" in message
    pod = render("v0.58.0-virtiofs.yaml")
    compute_adds(pod).append("SYS_ADMIN")
    assert "capabilities.add[3]: SYS_ADMIN" in refusal(pod)


def test_virt_launcher_process_is_refused_from_v13_unless_configured() -> None:
    # v1.2 sets it on passt VMIs by itself (template.go@v1.2.0:1279-1285); v1.3 never does
    # (template.go@v1.3.0:1275-1302): only an admin's selinuxLauncherType puts it there.
    pod = render("v1.3.0-virtiofs.yaml")
    pod["spec"]["securityContext"]["seLinuxOptions"] = {"type": "virt_launcher.process"}
    assert "spec.securityContext.seLinuxOptions.type: virt_launcher.process" in refusal(pod)
    older = render("v1.3.0-virtiofs.yaml", release="v1.2.0")
    older["spec"]["securityContext"]["seLinuxOptions"] = {"type": "virt_launcher.process"}
    assert refusal(older) == ""
    configured = LauncherPolicy.from_flags(selinux_launcher_types=["virt_launcher.process"])
    assert validate_review(as_request(pod), configured).allowed


def test_sys_nice_is_allowed_to_a_root_compute_from_v15() -> None:
    # The Root gate: rendercontainer.go@v1.5.0:282-292 adds SYS_NICE, nothing dropped.
    pod = render("v1.5.0-root-virtiofs.yaml")
    assert compute_adds(pod) == ["NET_BIND_SERVICE", "SYS_NICE"]
    assert refusal(pod) == ""
    compute_adds(pod).append("SYS_PTRACE")
    assert "capabilities.add[2]: SYS_PTRACE" in refusal(pod)
