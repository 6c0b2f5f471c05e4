"""The profile rows v0.9 - v0.28 against what their releases' template code renders.

Each test starts from a render in `tests/fixtures/kubevirt/` (the row's first release, every field
cited there) and checks what the render alone does not: that the row allows the release's own
value across the whole row, and refuses what the release no longer renders.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.webhook.conftest import RENDERS
from webhook.admission import validate_review
from webhook.rules import profiles
from webhook.rules.policy import LauncherPolicy
from webhook.serving.review import as_request


def render(name: str, *, release: str = "") -> dict[str, Any]:
    """A render, its launcher image retagged to `release` (a later release of its row) if given."""
    pod: dict[str, Any] = yaml.safe_load((RENDERS / name).read_text(encoding="utf-8"))
    if release:
        for container in pod["spec"]["containers"]:
            repository, _, _ = container["image"].rpartition(":")
            if repository.endswith("/virt-launcher"):
                container["image"] = f"{repository}:{release}"
    return pod


def refusal(pod: dict[str, Any]) -> str:
    answer = validate_review(as_request(pod), LauncherPolicy())
    return "" if answer.allowed else answer.message


# v0.21 - v0.26 render the pod type virt_launcher.process, no longer spc_t
# (template.go@v0.21.0:910-915, template.go@v0.26.0:963-968).


@pytest.mark.parametrize("release", ["v0.21.0", "v0.23.1", "v0.26.0"])
def test_v021_to_v026_allow_virt_launcher_process_and_refuse_spc_t(release: str) -> None:
    pod = render("v0.21.0.yaml", release=release)
    assert pod["spec"]["securityContext"]["seLinuxOptions"] == {"type": "virt_launcher.process"}
    assert refusal(pod) == ""
    pod["spec"]["securityContext"]["seLinuxOptions"]["type"] = "spc_t"
    assert "spec.securityContext.seLinuxOptions.type: spc_t" in refusal(pod)


def test_the_v021_row_names_its_selinux_type() -> None:
    row = profiles.profile_for((0, 21))
    assert row.since == (0, 21) and row.name == "v0.21-v0.26"
    assert row.selinux_type == "virt_launcher.process"
    assert profiles.profile_for((0, 20)).selinux_type == "spc_t"


# v0.27 renders virt_launcher.process unless the admin configures a type; v0.28 none unless
# configured, with an empty seLinuxOptions (template.go@v0.27.0:957-961, @v0.28.0:986-990).


def test_v027_refuses_spc_t_and_v028_refuses_a_type_it_does_not_render() -> None:
    v027 = render("v0.27.0.yaml")
    v027["spec"]["securityContext"]["seLinuxOptions"]["type"] = "spc_t"
    assert "spec.securityContext.seLinuxOptions.type: spc_t" in refusal(v027)
    v028 = render("v0.28.0.yaml")
    assert v028["spec"]["securityContext"]["seLinuxOptions"] == {}
    v028["spec"]["securityContext"]["seLinuxOptions"]["type"] = "virt_launcher.process"
    assert "seLinuxOptions.type: virt_launcher.process" in refusal(v028)
    admins = LauncherPolicy(selinux_types=frozenset({"virt_launcher.process"}))
    assert validate_review(as_request(v028), admins).allowed
