"""`virtdev audit` through the real `kubernetes` client against the API stand-in.

Launchers that KubeVirt runs are stored as virt-controller leaves them: controlled by their
VirtualMachineInstance, which lists them in `status.activePods` (`run_by_kubevirt`). The pods an
attacker makes carry the same labels and images, and whatever owner they like.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube_standin import ApiError, StandIn, write_kubeconfig
from tests.support import free_port
from tests.webhook.conftest import RENDERS, load_fixture
from virtdev.cli import main

PRIVILEGED = load_fixture("v1-launcher-2018-privileged.json")["request"]["object"]
NON_LAUNCHER = load_fixture("v1-non-launcher-pod.json")["request"]["object"]
VMIS = ("kubevirt.io/v1", "virtualmachineinstances")


def render(name: str) -> dict[str, Any]:
    """A pod of tests/fixtures/kubevirt/ as KubeVirt's template code renders it."""
    pod: dict[str, Any] = yaml.safe_load((RENDERS / name).read_text(encoding="utf-8"))
    return pod


def as_stored(pod: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"].pop("generateName", None)
    pod["metadata"].update(name=name, namespace=namespace)
    return {"apiVersion": "v1", "kind": "Pod", **pod}


def unprivileged(pod: dict[str, Any]) -> dict[str, Any]:
    """The launcher as /mutate leaves it: what the webhook admits."""
    import jsonpatch

    from webhook.admission import mutate_review
    from webhook.rules.policy import LauncherPolicy
    from webhook.serving.review import as_request

    answer = mutate_review(as_request(pod), LauncherPolicy())
    return jsonpatch.apply_patch(pod, answer.patch)  # type: ignore[no-any-return]


def vmi(stand_in: StandIn, name: str, namespace: str) -> dict[str, Any]:
    """The VMI `namespace/name`, created (status as virt-api's mutator leaves it) if need be."""
    try:
        return stand_in.get_object(*VMIS, namespace, name)
    except ApiError:
        meta = {"name": name, "namespace": namespace}
        kind = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance"}
        return stand_in.put_object({**kind, "metadata": meta, "status": {"phase": "Pending"}})


def controlled_by(owner: dict[str, Any], **changes: Any) -> list[dict[str, Any]]:
    """The controlling ownerReference virt-controller writes (`changes` forge it)."""
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return [{**reference, **changes}]


def count(stand_in: StandIn, instance: dict[str, Any], pod: dict[str, Any]) -> None:
    """virt-controller lists the pod in the VMI's `status.activePods` (uid -> node)."""
    instance = stand_in.get_object(
        *VMIS, instance["metadata"]["namespace"], instance["metadata"]["name"]
    )
    instance["status"].setdefault("activePods", {})[pod["metadata"]["uid"]] = "node-a"
    stand_in.replace_object(instance)


def run_by_kubevirt(
    stand_in: StandIn, pod: dict[str, Any], name: str, namespace: str, *, vm: str = ""
) -> dict[str, Any]:
    """The launcher as virt-controller runs it for the VMI `vm` (default: one of its own)."""
    instance = vmi(stand_in, vm or name, namespace)
    stored = as_stored(pod, name, namespace)
    stored["metadata"]["ownerReferences"] = controlled_by(instance)
    created = stand_in.put_object(stored)
    count(stand_in, instance, created)
    return created


def kubevirts(namespace: str, vm: str) -> str:
    """The end of a vouched-for launcher's line."""
    return f" [KubeVirt's: VMI {namespace}/{vm} lists it in status.activePods]"


def not_vouched(why: str) -> str:
    return f" [judged as any pod, not vouched for by KubeVirt: {why}]"


@pytest.fixture
def kubeconfig(stand_in: StandIn, tmp_path: Path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)


def populate(stand_in: StandIn) -> None:
    run_by_kubevirt(stand_in, PRIVILEGED, "old-vm", "vms")
    for i in range(5):
        run_by_kubevirt(stand_in, unprivileged(PRIVILEGED), f"vm-{i}", "vms")
    run_by_kubevirt(stand_in, unprivileged(PRIVILEGED), "vm-x", "prod")
    stand_in.put_object(as_stored(NON_LAUNCHER, "debugger", "vms"))


def test_every_launcher_in_every_namespace_gets_one_line(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-A"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "prod/vm-x: allowed" + kubevirts("prod", "vm-x")
    assert lines[1].startswith("vms/old-vm: denied: spec.containers[")
    assert "securityContext.privileged" in lines[1]
    assert lines[1].endswith(kubevirts("vms", "old-vm")), "privileged is never an exception"
    assert lines[2:] == [f"vms/vm-{i}: allowed" + kubevirts("vms", f"vm-{i}") for i in range(5)]
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
    # The VMIs first (7 of them), paged the same way, so that each page of pods is judged as it
    # arrives.
    vmis = [r for r in stand_in.requests if r.resource == "virtualmachineinstances"]
    assert stand_in.requests[: len(vmis)] == vmis
    assert [r.path for r in vmis] == ["/apis/kubevirt.io/v1/virtualmachineinstances"] * 3
    assert ["limit=3" in r.query for r in vmis] == [True] * 3
    assert ["continue=" in r.query for r in vmis] == [False, True, True]
    assert {r.method for r in stand_in.requests} == {"GET"}, "read-only"


def test_one_namespace_with_json_output(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "prod", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["pods"] == [
        {
            "namespace": "prod",
            "name": "vm-x",
            "verdict": "allowed",
            "violations": [],
            "message": "",
            "vouched": True,
            "vouching": "VMI prod/vm-x lists it in status.activePods",
        }
    ]
    assert document["denied"] == 0
    assert document["not_vouched"] == 0
    assert document["vmis_unreadable"] is None
    assert document["guarded"] == []
    # The VMIs, the launchers, then whether the namespace is guarded (its other pods would be
    # judged).
    assert [r.path for r in stand_in.requests] == [
        "/apis/kubevirt.io/v1/namespaces/prod/virtualmachineinstances",
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
    run_by_kubevirt(stand_in, pod, "a", "vms")
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
    def forbid(method: str, key: Any) -> None:
        if key[1] == "pods":
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
        "prod/vm-x: allowed" + kubevirts("prod", "vm-x"),
        lines[1],
        *[f"vms/vm-{i}: allowed" + kubevirts("vms", f"vm-{i}") for i in range(5)],
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
    assert verdicts["vms/vm-0"] == "allowed" + kubevirts("vms", "vm-0")
    assert err == "8 pods in namespace vms: 3 would be denied\n"
    assert all("labelSelector" not in r.query for r in stand_in.requests if r.resource == "pods")


def test_namespaces_that_cannot_be_read_are_said_and_the_launchers_still_audited(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
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


# --- who vouches for a launcher: KubeVirt's state, not the pod's labels -------------------------

V0_20 = render("v0.20.0.yaml")  # root, spc_t, /var/run/kubevirt, NET_ADMIN: beyond baseline
V1_9 = render("v1.9.0-nonroot.yaml")  # baseline-compliant: allowed either way
#: What baseline refuses of v0.20's render first (the reasons' wording is the rules' business).
BASELINE_REFUSES = "spec.securityContext.seLinuxOptions.type: spc_t ("


def line_of(out: str, name: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(f"{name}: ")]
    return line


def forge(stand_in: StandIn, how: str, pod: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A launcher-labelled pod a tenant of `vms` creates, with the owner `how` names, and the
    reason the audit should give for not vouching for it."""
    instance = vmi(stand_in, "testvmi", "vms")
    stored = as_stored(pod, "forged", "vms")
    metadata = stored["metadata"]
    metadata.pop("ownerReferences", None)
    why = ""
    if how == "no owner":
        why = "no controlling ownerReference to a VirtualMachineInstance"
    elif how == "an owner, not the controller":
        metadata["ownerReferences"] = controlled_by(instance, controller=False)
        why = "no controlling ownerReference to a VirtualMachineInstance"
    elif how == "a look-alike kind":
        metadata["ownerReferences"] = controlled_by(instance, apiVersion="evil.example/v1")
        why = "no controlling ownerReference to a VirtualMachineInstance"
    elif how == "the real VMI, which does not count it":
        metadata["ownerReferences"] = controlled_by(instance)
        why = "VMI vms/testvmi does not list it in status.activePods"
    elif how == "a VMI that does not exist":
        metadata["ownerReferences"] = controlled_by(instance, name="ghost")
        why = "its controller, VMI vms/ghost, does not exist"
    elif how == "another uid":
        metadata["ownerReferences"] = controlled_by(instance, uid="0" * 8 + "-forged")
        why = "its controlling ownerReference has another uid than VMI vms/testvmi"
    elif how == "a VMI of another namespace that counts it":
        elsewhere = vmi(stand_in, "theirs", "other")
        metadata["ownerReferences"] = controlled_by(elsewhere)
        why = "its controller, VMI vms/theirs, does not exist"
    created = stand_in.put_object(stored)
    if how == "another uid":  # even counted, the owner's uid must be the VMI's
        count(stand_in, instance, created)
    if how == "a VMI of another namespace that counts it":
        count(stand_in, elsewhere, created)
    return created, why


FORGERIES = (
    "no owner",
    "an owner, not the controller",
    "a look-alike kind",
    "the real VMI, which does not count it",
    "a VMI that does not exist",
    "another uid",
    "a VMI of another namespace that counts it",
)


@pytest.mark.parametrize("how", FORGERIES)
def test_a_forged_launcher_is_judged_as_any_pod_and_the_real_one_keeps_its_release(
    how: str, stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_by_kubevirt(stand_in, V0_20, "virt-launcher-testvmi-abcde", "vms", vm="testvmi")
    _, why = forge(stand_in, how, V0_20)  # the same render, label and image tag
    assert main(["audit", "--kubeconfig", kubeconfig, "-A"]) == 1
    out, err = capsys.readouterr()
    real_line = line_of(out, "vms/virt-launcher-testvmi-abcde")
    assert real_line == "vms/virt-launcher-testvmi-abcde: allowed" + kubevirts("vms", "testvmi")
    forged = line_of(out, "vms/forged")
    assert forged.startswith("vms/forged: denied: " + BASELINE_REFUSES), forged
    assert "hostPath.path: /var/run/kubevirt (" in forged
    assert "capabilities.add[0]: NET_ADMIN (" in forged
    assert forged.endswith(not_vouched(why)), forged
    assert err.endswith(": 1 would be denied, 1 judged as any pod (not KubeVirt's)\n"), err


def test_json_output_says_who_vouched_for_each_launcher(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_by_kubevirt(stand_in, V1_9, "real", "vms", vm="testvmi")
    forge(stand_in, "the real VMI, which does not count it", V1_9)
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "vms", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    pods = {p["name"]: p for p in document["pods"]}
    assert pods["real"]["vouched"] is True
    assert pods["real"]["vouching"] == "VMI vms/testvmi lists it in status.activePods"
    # Baseline allows a v1.9 launcher either way; the audit still says it is not KubeVirt's.
    assert pods["forged"]["verdict"] == "allowed"
    assert pods["forged"]["vouched"] is False
    assert pods["forged"]["vouching"] == "VMI vms/testvmi does not list it in status.activePods"
    assert document["not_vouched"] == 1


def hotplug_v0_44() -> dict[str, Any]:
    """KubeVirt's v1.9 attachment pod with the image and host network of a v0.41 - v0.46 one."""
    pod = render("hotplug-v1.9.0.yaml")
    pod["spec"]["containers"][0]["image"] = "quay.io/kubevirt/virt-launcher:v0.44.0"
    pod["spec"]["hostNetwork"] = True
    return pod


def attach(stand_in: StandIn, owner: dict[str, Any], name: str, *, named: bool = True) -> None:
    """virt-controller's attachment pod `name` for the launcher `owner`; `named`: the VMI names
    it in status.volumeStatus, as virt-controller does for the attachment pod it works with."""
    pod = as_stored(hotplug_v0_44(), name, "vms")
    pod["metadata"]["ownerReferences"] = controlled_by(owner)
    created = stand_in.put_object(pod)
    if named:
        instance = stand_in.get_object(*VMIS, "vms", "testvmi")
        hotplug = {"attachPodName": name, "attachPodUID": created["metadata"]["uid"]}
        volume = {"name": "hotplugdisk1", "target": "sda", "hotplugVolume": hotplug}
        instance["status"].setdefault("volumeStatus", []).append(volume)
        stand_in.replace_object(instance)


def test_a_hotplug_pod_is_kubevirts_only_where_its_launcher_is_and_the_vmi_names_it(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    real = run_by_kubevirt(stand_in, V1_9, "virt-launcher-testvmi-abcde", "vms", vm="testvmi")
    forged_launcher, _ = forge(stand_in, "the real VMI, which does not count it", V1_9)
    attach(stand_in, real, "hp-volume-real")
    attach(stand_in, real, "hp-volume-unnamed", named=False)
    attach(stand_in, forged_launcher, "hp-volume-forged-owner")
    orphan = as_stored(hotplug_v0_44(), "hp-volume-orphan", "vms")
    del orphan["metadata"]["ownerReferences"]
    stand_in.put_object(orphan)
    assert main(["audit", "--kubeconfig", kubeconfig, "--guard", "-n", "vms"]) == 1
    out, _ = capsys.readouterr()
    assert line_of(out, "vms/hp-volume-real") == (
        "vms/hp-volume-real: allowed [KubeVirt's: VMI vms/testvmi lists its owner "
        "virt-launcher-testvmi-abcde in status.activePods and it in volumeStatus]"
    )
    host_network = "denied: spec.hostNetwork: true ("
    for name, why in (
        ("hp-volume-unnamed", "VMI vms/testvmi does not name it in status.volumeStatus"),
        (
            "hp-volume-forged-owner",
            "no VMI of vms lists its owner forged in status.activePods",
        ),
        ("hp-volume-orphan", "no controlling ownerReference to a launcher pod"),
    ):
        line = line_of(out, f"vms/{name}")
        assert line.startswith(f"vms/{name}: {host_network}"), line
        assert line.endswith(not_vouched(why)), line


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (404, "404 Not Found (is KubeVirt installed?)"),
        (403, "403 Forbidden (needs virtualmachineinstances list in API group kubevirt.io)"),
        (500, "500 Internal Server Error"),
    ],
)
def test_vmis_that_cannot_be_listed_are_said_in_one_line_and_no_launcher_is_vouched_for(
    status: int,
    said: str,
    stand_in: StandIn,
    kubeconfig: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_by_kubevirt(stand_in, V0_20, "old", "vms")
    run_by_kubevirt(stand_in, V1_9, "new", "vms")
    if status == 404:  # KubeVirt is not installed: no such API
        stand_in.missing.add("kubevirt.io/v1")
    else:

        def refuse(method: str, key: Any) -> None:
            if key[1] == "virtualmachineinstances":
                reason = "Forbidden" if status == 403 else "InternalError"
                raise ApiError(status, reason, "virtualmachineinstances: refused")

        stand_in.before = refuse
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "vms"]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"virtdev audit: cannot list VirtualMachineInstances in namespace vms: {said}: KubeVirt's "
        "state vouches for no pod, every launcher and hotplug pod is judged as any pod (Pod "
        "Security baseline)",
        "2 launcher pods (kubevirt.io=virt-launcher) in namespace vms: 1 would be denied, 2 "
        "judged as any pod (not KubeVirt's)",
    ]
    reason = said.split(" (")[0]
    assert line_of(out, "vms/new") == "vms/new: allowed" + not_vouched(
        f"VirtualMachineInstances not read ({reason})"
    )
    assert line_of(out, "vms/old").startswith("vms/old: denied: " + BASELINE_REFUSES)


# --- --report: PolicyReports, written by server-side apply ---------------------------------------

REPORTS = ("wgpolicyk8s.io/v1alpha2", "policyreports")


def report_of(stand_in: StandIn, namespace: str) -> dict[str, Any]:
    return stand_in.get_object(*REPORTS, namespace, "virtdev-audit")


def stored_reports(stand_in: StandIn) -> dict[str, dict[str, Any]]:
    items, _ = stand_in.store.list(*REPORTS, "")
    return {r["metadata"]["namespace"]: r for r in items}


def writes(stand_in: StandIn) -> list[tuple[str, str, str]]:
    return [(r.method, r.namespace, r.query) for r in stand_in.requests if r.method != "GET"]


def test_report_writes_one_policy_report_per_namespace_by_server_side_apply(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--report"]) == 0, "written"
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 7, "the lines as ever"
    assert err.splitlines()[-1] == "PolicyReports: 2 written, 0 unchanged, 0 deleted"
    assert set(stored_reports(stand_in)) == {"prod", "vms"}
    vms = report_of(stand_in, "vms")
    assert vms["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "virtdev"}
    assert vms["summary"] == {"pass": 5, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    (fail,) = [r for r in vms["results"] if r["result"] == "fail"]
    old_vm = stand_in.get_object("v1", "pods", "vms", "old-vm")
    assert fail["resources"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": "vms",
            "name": "old-vm",
            "uid": old_vm["metadata"]["uid"],
        }
    ]
    assert (fail["policy"], fail["rule"]) == ("virtdev-launcher", "privileged")
    assert fail["message"].startswith("spec.containers[1].securityContext.privileged: true (")
    assert fail["properties"] == {
        "profile": "<=v0.6",
        "vouched": "true",
        "vouching": "VMI vms/old-vm lists it in status.activePods",
    }
    patches = [r for r in stand_in.requests if r.method == "PATCH"]
    assert [r.path for r in patches] == [
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/prod/policyreports/virtdev-audit",
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/vms/policyreports/virtdev-audit",
    ]
    assert {r.content_type for r in patches} == {"application/apply-patch+yaml"}
    assert all("fieldManager=virtdev-audit" in r.query and "force=true" in r.query for r in patches)
    (listed,) = [
        r for r in stand_in.requests if r.resource == "policyreports" and r.method == "GET"
    ]
    assert "labelSelector=app.kubernetes.io/managed-by%3Dvirtdev" in listed.query


def test_a_rerun_with_nothing_changed_changes_nothing_and_a_change_updates_in_place(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--report"]) == 0
    first = {ns: r["metadata"]["resourceVersion"] for ns, r in stored_reports(stand_in).items()}
    capsys.readouterr()
    events = len(stand_in.store.events)
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--report"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        "PolicyReports: 0 written, 2 unchanged, 0 deleted"
    )
    again = {ns: r["metadata"]["resourceVersion"] for ns, r in stored_reports(stand_in).items()}
    assert again == first
    assert len(stand_in.store.events) == events, "not one write"
    stand_in.delete_object(stand_in.get_object("v1", "pods", "vms", "old-vm"))
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--report"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        "PolicyReports: 1 written, 1 unchanged, 0 deleted"
    )
    vms = report_of(stand_in, "vms")
    assert vms["metadata"]["uid"] == stored_reports(stand_in)["vms"]["metadata"]["uid"]
    assert vms["summary"]["fail"] == 0 and vms["summary"]["pass"] == 5
    assert report_of(stand_in, "prod")["metadata"]["resourceVersion"] == first["prod"]


def test_reports_of_namespaces_with_nothing_left_to_judge_are_deleted(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    theirs = {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": "kyverno-pods", "namespace": "prod"},
    }
    stand_in.put_object(theirs)
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--report"]) == 0
    stand_in.delete_object(stand_in.get_object("v1", "pods", "prod", "vm-x"))
    # With -n, only that namespace's report is looked at.
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "vms", "--report"]) == 0
    assert set(stored_reports(stand_in)) == {"prod", "vms"}
    capsys.readouterr()
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "prod", "--report"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        "PolicyReports: 0 written, 0 unchanged, 1 deleted"
    )
    assert stand_in.get_object(*REPORTS, "prod", "kyverno-pods"), "another's report stays"
    assert set(stored_reports(stand_in)) == {"prod", "vms"}
    assert "virtdev-audit" not in {
        r["metadata"]["name"] for r in stand_in.store.list(*REPORTS, "prod")[0]
    }


def test_yaml_output_prints_the_reports_and_writes_nothing(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    forge(stand_in, "no owner", V0_20)  # three checks broken: three results for one pod
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--report", "-o", "yaml"]) == 0
    out, err = capsys.readouterr()
    printed = list(yaml.safe_load_all(out))
    assert "&id" not in out, "no YAML anchors: each result stands alone"
    assert [(r["kind"], r["metadata"]["namespace"]) for r in printed] == [
        ("PolicyReport", "prod"),
        ("PolicyReport", "vms"),
    ]
    assert printed[1]["summary"]["fail"] == 4
    assert err.splitlines()[-1] == "PolicyReports: 2 printed, none written"
    assert writes(stand_in) == []
    assert not any(r.resource == "policyreports" for r in stand_in.requests), "nor read"


def test_yaml_output_without_report_is_a_bad_flag(
    kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "-o", "yaml"]) == 2
    assert capsys.readouterr().err == (
        "virtdev audit: --output: yaml prints the PolicyReports --report would write: give "
        "--report too (see virtdev audit --help)\n"
    )


def test_under_warn_enforcement_the_reports_warn(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    argv = ["audit", "--kubeconfig", kubeconfig, "-n", "vms", "--report"]
    assert main([*argv, "--enforcement", "warn"]) == 0
    assert report_of(stand_in, "vms")["summary"] == {
        "pass": 5,
        "fail": 0,
        "warn": 1,
        "error": 0,
        "skip": 0,
    }
    assert "vms/old-vm: denied: " in capsys.readouterr().out, "the lines say what deny would do"


def test_json_output_with_report_says_what_was_written(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stand_in)
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--report", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["reports"] == {"changed": ["prod", "vms"], "unchanged": [], "deleted": []}
    assert set(document["pods"][0]) == {
        "namespace",
        "name",
        "verdict",
        "violations",
        "message",
        "vouched",
        "vouching",
    }


def test_the_other_pods_of_a_guarded_namespace_are_the_guards_results(
    stand_in: StandIn, kubeconfig: str
) -> None:
    populate(stand_in)
    stand_in.put_object(namespace("vms", **{"virtdev.io/guard": "baseline"}))
    stand_in.put_object(privileged_tool("tool", "vms"))
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "vms", "--report"]) == 0
    results = report_of(stand_in, "vms")["results"]
    tool = [r for r in results if r["resources"][0]["name"] == "tool"]
    assert [(r["policy"], r["rule"], r["result"]) for r in tool] == [
        ("virtdev-guard", "privileged", "fail")
    ]
    assert tool[0]["properties"] == {"profile": "baseline"}


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (404, "404 Not Found (is the PolicyReport CRD (wgpolicyk8s.io/v1alpha2) installed?"),
        (403, "403 Forbidden (needs policyreports create, patch, list and delete in API group"),
    ],
)
def test_reports_that_cannot_be_written_are_one_line_and_exit_1(
    status: int,
    said: str,
    stand_in: StandIn,
    kubeconfig: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    populate(stand_in)
    if status == 404:
        stand_in.missing.add("wgpolicyk8s.io/v1alpha2")
    else:

        def refuse(method: str, key: Any) -> None:
            if key[1] == "policyreports":
                raise ApiError(403, "Forbidden", "policyreports is forbidden")

        stand_in.before = refuse
    assert main(["audit", "--kubeconfig", kubeconfig, "-A", "--report"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"virtdev audit: cannot write PolicyReports: {said}"), err[-1]


# --- 3,000 pods in one namespace ----------------------------------------------------------------


def a_crowd(stand_in: StandIn, pods: int, forged_every: int) -> tuple[int, int]:
    """`pods` launchers in `vms`, copies of KubeVirt's v1.9 render run by KubeVirt, and every
    `forged_every`th one a v0.20 render no VMI vouches for; (fails expected, pods forged)."""
    instance = vmi(stand_in, "testvmi", "vms")
    owner = controlled_by(instance)
    forged = 0
    active: dict[str, str] = {}
    for i in range(pods):
        is_forged = i % forged_every == 0
        stored = as_stored(V0_20 if is_forged else V1_9, f"virt-launcher-vm{i:04}-x7k2p", "vms")
        if not is_forged:
            stored["metadata"]["ownerReferences"] = owner
        created = stand_in.put_object(stored)
        if is_forged:
            forged += 1
        else:
            active[created["metadata"]["uid"]] = "node-a"
    instance = stand_in.get_object(*VMIS, "vms", "testvmi")
    instance["status"]["activePods"] = active
    stand_in.replace_object(instance)
    return forged * 3, forged  # seLinuxOptions, hostPathVolumes, capabilities_baseline


def test_3000_pods_make_a_report_within_the_bound_with_every_fail_and_an_exact_summary(
    stand_in: StandIn, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from webhook.rules.reports import MAX_REPORT_BYTES

    fails, forged = a_crowd(stand_in, 3000, 15)
    started = time.monotonic()
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "vms", "--report"]) == 0
    took = time.monotonic() - started
    capsys.readouterr()
    stored = report_of(stand_in, "vms")
    written = len(json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode())
    assert written <= MAX_REPORT_BYTES + 1024, "and the server's own metadata"
    assert stored["summary"] == {
        "pass": 3000 - forged,
        "fail": fails,
        "warn": 0,
        "error": 0,
        "skip": 0,
    }
    failed = [r for r in stored["results"] if r["result"] == "fail"]
    assert len(failed) == fails
    assert {r["resources"][0]["name"] for r in failed} == {
        f"virt-launcher-vm{i:04}-x7k2p" for i in range(0, 3000, 15)
    }
    assert not any(r["message"].endswith("…") for r in failed), "whole messages"
    passes = sum(r["result"] == "pass" for r in stored["results"])
    annotations = stored["metadata"]["annotations"]
    assert annotations == {"virtdev.io/passes-omitted": str(3000 - forged - passes)}
    version = stored["metadata"]["resourceVersion"]
    assert main(["audit", "--kubeconfig", kubeconfig, "-n", "vms", "--report"]) == 0
    assert report_of(stand_in, "vms")["metadata"]["resourceVersion"] == version
    print(f"3000 pods: report {written} bytes, {passes} passes kept, {took:.1f} s")
