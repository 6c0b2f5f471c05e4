"""`virtdev capacity` through the real `kubernetes` client against the API stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube_standin import StandIn, node_object, write_kubeconfig
from tests.support import free_port
from virtdev.cli import main
from webhook.nodes.capacity import Amounts, rows, verdict

KVM, TUN = "devices.kubevirt.io/kvm", "devices.kubevirt.io/tun"


def launcher(name: str, node: str | None, phase: str = "Running", **extra: Any) -> dict[str, Any]:
    limits = {KVM: "1", TUN: "1"}
    spec: dict[str, Any] = {"containers": [{"name": "compute", "resources": {"limits": limits}}]}
    if node:
        spec["nodeName"] = node
    spec.update(extra)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "vms", "labels": {"kubevirt.io": "virt-launcher"}},
        "spec": spec,
        "status": {"phase": phase},
    }


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[str]:
    with StandIn().running() as stand_in:
        stand_in.put_object(node_object("full", kvm="2", tun="2"))
        stand_in.put_object(node_object("healthy", kvm="110", tun="110"))
        stand_in.put_object(node_object("no-agent", kvm=None, tun=None))
        stand_in.put_object(node_object("sick", kvm="110", kvm_allocatable="0"))
        stand_in.put_object(node_object("down", ready="False"))
        stand_in.put_object(node_object("cordoned", unschedulable=True))
        stand_in.put_object(
            node_object("gpu", taints=[{"key": "gpu", "value": "a100", "effect": "NoSchedule"}])
        )
        stand_in.put_object(launcher("vm-1", "full"))
        stand_in.put_object(launcher("vm-2", "full"))
        stand_in.put_object(launcher("vm-done", "full", phase="Succeeded"))
        stand_in.put_object(launcher("vm-3", "healthy"))
        stand_in.put_object(launcher("vm-pending", None, phase="Pending"))
        yield write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)


VERDICTS = {
    "cordoned": "cordoned (spec.unschedulable)",
    "down": "NotReady",
    "full": "kvm fully requested (2/2)",
    "gpu": "taint gpu=a100:NoSchedule",
    "healthy": "can take 109 more VMs",
    "no-agent": "no devices.kubevirt.io/kvm",
    "sick": "kvm allocatable 0",
}


def test_the_table_gives_a_verdict_per_node(
    kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["capacity", "--kubeconfig", kubeconfig]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NODE", "READY", "SCHEDULABLE", "KVM"]
    by_node = {line.split()[0]: line for line in lines[1:-1]}
    assert sorted(by_node) == sorted(VERDICTS)
    for node, expected in VERDICTS.items():
        assert expected in by_node[node], by_node[node]
    assert by_node["full"].split()[1:5] == ["yes", "yes", "2/2/2", "2/2/2"]
    assert by_node["cordoned"].split()[1:3] == ["yes", "no"]
    assert by_node["sick"].split()[3] == "110/0/0"
    assert lines[-1] == "109 more VMs fit, by devices alone"


def test_json_output_carries_the_same_numbers(
    kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["capacity", "--kubeconfig", kubeconfig, "-o", "json"]) == 0
    nodes = {item["node"]: item for item in json.loads(capsys.readouterr().out)["nodes"]}
    assert nodes["full"]["resources"][KVM] == {"capacity": 2, "allocatable": 2, "requested": 2}
    assert nodes["healthy"]["resources"][TUN] == {
        "capacity": 110,
        "allocatable": 110,
        "requested": 1,
    }
    assert nodes["no-agent"]["resources"][KVM] == {"capacity": 0, "allocatable": 0, "requested": 0}
    assert nodes["down"]["ready"] is False and nodes["cordoned"]["schedulable"] is False
    assert {name: item["room"] for name, item in nodes.items() if item["room"]} == {"healthy": 109}


def test_an_unreachable_cluster_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}")
    assert main(["capacity", "--kubeconfig", nowhere]) == 1
    assert "cannot reach the API server" in capsys.readouterr().err


def test_a_missing_kubeconfig_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent"
    assert main(["capacity", "--kubeconfig", str(absent)]) == 2
    err = capsys.readouterr().err
    assert err == f"virtdev capacity: --kubeconfig: {absent}: No such file or directory\n"


def test_init_containers_count_by_the_scheduler_rule() -> None:
    pod = launcher("vm", "n", initContainers=[{"name": "i", "resources": {"limits": {KVM: "3"}}}])
    (row,) = rows([node_object("n")], [pod])
    assert row.devices[KVM].requested == 3
    assert row.devices[TUN].requested == 1


def test_no_nodes_at_all() -> None:
    assert rows([], []) == []
    assert verdict(node_object("n"), {KVM: Amounts(1, 1, 0), TUN: Amounts(1, 1, 0)}) == (
        "can take 1 more VM",
        1,
    )


def test_pages_of_two_give_the_same_table_as_one_page(kubeconfig: str) -> None:
    from webhook.nodes.capacity import collect
    from webhook.nodes.view import core_api

    core = core_api(kubeconfig)
    paged = rows(*collect(core, page_size=2))
    whole = rows(*collect(core, page_size=1000))
    assert paged == whole
    assert {row.node for row in paged} == set(VERDICTS)
    assert [row.room for row in paged if row.node == "healthy"] == [109]
