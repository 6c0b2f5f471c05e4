"""`virtdev audit` through the real `kubernetes` client against the API stand-in."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube_standin import StandIn, write_kubeconfig
from tests.support import free_port
from tests.webhook.conftest import load_fixture
from virtdev.cli import main

PRIVILEGED = load_fixture("v1-launcher-2018-privileged.json")["request"]["object"]
NON_LAUNCHER = load_fixture("v1-non-launcher-pod.json")["request"]["object"]


def as_stored(pod: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"].pop("generateName", None)
    pod["metadata"].update(name=name, namespace=namespace)
    return {"apiVersion": "v1", "kind": "Pod", **pod}


def unprivileged(pod: dict[str, Any]) -> dict[str, Any]:
    """The launcher as /mutate leaves it: what the webhook admits."""
    import jsonpatch

    from webhook.admission import mutate_review
    from webhook.offline import as_request
    from webhook.policy import LauncherPolicy

    answer = mutate_review(as_request(pod), LauncherPolicy())
    return jsonpatch.apply_patch(pod, answer.patch)  # type: ignore[no-any-return]


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with StandIn().running() as running:
        yield running


@pytest.fixture
def kubeconfig(stand_in: StandIn, tmp_path: Path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)


def populate(stand_in: StandIn) -> None:
    stand_in.put_object(as_stored(PRIVILEGED, "old-vm", "vms"))
    for i in range(5):
        stand_in.put_object(unprivileged(as_stored(PRIVILEGED, f"vm-{i}", "vms")))
    stand_in.put_object(unprivileged(as_stored(PRIVILEGED, "vm-x", "prod")))
    stand_in.put_object(as_stored(NON_LAUNCHER, "debugger", "vms"))


def test_every_launcher_in_every_namespace_gets_one_line(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-A"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "prod/vm-x: allowed"
    assert lines[1].startswith("vms/old-vm: denied: spec.containers[")
    assert "securityContext.privileged" in lines[1]
    assert lines[2:] == [f"vms/vm-{i}: allowed" for i in range(5)]
    assert (
        err == "7 launcher pods (kubevirt.io=virt-launcher) in all namespaces: 1 would be denied\n"
    )


def test_the_list_is_paged_and_filtered_by_the_launcher_label(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--chunk-size", "3"]) == 1
    assert len(capsys.readouterr().out.splitlines()) == 7
    lists = [r for r in stand_in.requests if r.resource == "pods"]
    assert [r.path for r in lists] == ["/api/v1/pods"] * 3
    assert all("labelSelector=kubevirt.io%3Dvirt-launcher" in r.query for r in lists)
    assert all("limit=3" in r.query for r in lists)
    assert ["continue=" in r.query for r in lists] == [False, True, True]
    assert {r.method for r in stand_in.requests} == {"GET"}, "read-only"


def test_one_namespace_with_json_output(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "prod", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["pods"] == [
        {"namespace": "prod", "name": "vm-x", "verdict": "allowed", "violations": [], "message": ""}
    ]
    assert document["denied"] == 0
    assert document["guarded"] == []
    # The launchers, then whether the namespace is guarded (its other pods would be judged).
    assert [r.path for r in stand_in.requests] == [
        "/api/v1/namespaces/prod/pods",
        "/api/v1/namespaces/prod",
    ]


def test_json_output_names_the_violations(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "vms", "-o", "json"]) == 1
    pods = {p["name"]: p for p in json.loads(capsys.readouterr().out)["pods"]}
    assert pods["old-vm"]["verdict"] == "denied"
    assert any("securityContext.privileged" in v for v in pods["old-vm"]["violations"])
    assert "debugger" not in pods


def test_the_config_files_policy_is_the_webhooks(
    stand_in: StandIn, kubeconfig: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = load_fixture("v1-launcher-current-nonroot.json")["request"]["object"]
    pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"].append("SYS_PTRACE")
    stand_in.put_object(as_stored(pod, "a", "vms"))
    assert main(["audit", "--kubeconfig", kubeconfig, "-A"]) == 1
    assert "SYS_PTRACE" in capsys.readouterr().out
    config = tmp_path / "virtdev.yaml"
    permitted = "[NET_ADMIN, NET_BIND_SERVICE, SYS_PTRACE]"
    config.write_text(f"permitted-capabilities: {permitted}\n", encoding="utf-8")
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--config", str(config)]) == 0


def test_no_launchers_is_exit_0(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--kubeconfig", kubeconfig, "-A"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("0 launcher pods")


def test_a_namespace_or_all_must_be_chosen(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["audit"])
    assert exited.value.code == 2
    assert "one of the arguments -n/--namespace -A/--all-namespaces is required" in (
        capsys.readouterr().err
    )


def test_an_unreachable_cluster_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{free_port()}")
    assert main(["audit", "--kubeconfig", nowhere, "-A"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("virtdev audit: cannot reach the API server: ")
    assert err.count("\n") == 1


def test_a_refusal_names_the_permission(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.kube_standin import ApiError

    def forbid(method: str, key: Any) -> None:
        raise ApiError(403, "Forbidden", 'pods is forbidden: cannot list resource "pods"')

    stand_in.before = forbid
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "vms"]) == 1
    assert capsys.readouterr().err == (
        "virtdev audit: the API server refused to list pods in namespace vms: 403 Forbidden "
        "(needs pods list; see docs/install.md)\n"
    )


# --- /guard's judgement of the other pods -------------------------------------------------------


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def privileged_tool(name: str, ns: str) -> dict[str, Any]:
    pod = copy.deepcopy(NON_LAUNCHER)
    pod["spec"].pop("hostPID", None)
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    return as_stored(pod, name, ns)


def test_the_other_pods_of_a_guarded_namespace_are_judged_as_guard_would(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    stand_in.put_object(namespace("vms", **{"virtdev.io/guard": "baseline"}))
    stand_in.put_object(namespace("prod"))
    stand_in.put_object(privileged_tool("tool", "vms"))
    stand_in.put_object(privileged_tool("tool", "prod"))  # not guarded: not audited
    assert main(["audit", "--kubeconfig", kubeconfig, "-A"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[:7] == [
        "prod/vm-x: allowed",
        lines[1],
        *[f"vms/vm-{i}: allowed" for i in range(5)],
    ]
    # The fixture's node debugger (hostPID, privileged) and the tool: baseline refuses both.
    assert lines[7].startswith("vms/debugger: denied: spec.hostPID: true (")
    assert lines[8:] == [
        "vms/tool: denied: spec.containers[0].securityContext.privileged: true "
        "(Pod Security baseline forbids privileged containers)",
    ]
    assert err.startswith("9 launcher pods (kubevirt.io=virt-launcher) and the other pods of ")
    assert "guarded namespaces (vms) in all namespaces: 3 would be denied" in err
    (listed,) = [r for r in stand_in.requests if r.resource == "namespaces"]
    assert "labelSelector=virtdev.io/guard%3Dbaseline" in listed.query, listed.query


def test_guard_previews_a_namespace_not_labelled_yet(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    stand_in.put_object(namespace("vms"))
    stand_in.put_object(privileged_tool("tool", "vms"))
    assert main(["audit", "--kubeconfig", kubeconfig, "--guard", "-n", "vms"]) == 1
    out, err = capsys.readouterr()
    verdicts = dict(line.split(": ", 1) for line in out.splitlines())
    assert verdicts["vms/debugger"].startswith("denied: spec.hostPID")
    assert verdicts["vms/tool"].startswith("denied: spec.containers[0].securityContext.privileged")
    assert verdicts["vms/old-vm"].startswith("denied: "), "launchers as /validate judges them"
    assert verdicts["vms/vm-0"] == "allowed"
    assert err == "8 pods in namespace vms: 3 would be denied\n"
    assert all("labelSelector" not in r.query for r in stand_in.requests if r.resource == "pods")


def test_namespaces_that_cannot_be_read_are_said_and_the_launchers_still_audited(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.kube_standin import ApiError

    def forbid(method: str, key: Any) -> None:
        if key[1] == "namespaces":
            raise ApiError(403, "Forbidden", "namespaces is forbidden")

    populate(stand_in)
    stand_in.before = forbid
    assert main(["audit", "--kubeconfig", kubeconfig, "-A"]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 7
    assert err.startswith(
        "virtdev audit: cannot read the namespaces' labels (403 Forbidden, needs namespaces "
        "get/list): the other pods of guarded namespaces are not audited\n"
    )
