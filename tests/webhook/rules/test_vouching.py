"""The pure vouching rule: given a pod and the VMIs' index, KubeVirt's or not, and why."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.rules.policy import LauncherPolicy
from webhook.rules.vouching import Index, Instance, Vouching, read_instance, vouch

POLICY = LauncherPolicy()
VMI_UID = "9b2f7c1e-6d4a-4f0b-8c3e-1a5d2e7f9b60"
POD_UID = "5c0ffee0-0000-4000-8000-000000000001"
LAUNCHER = {"name": "virt-launcher-testvmi-abcde", "uid": POD_UID}


def pod(
    label: str = "virt-launcher",
    *,
    namespace: str = "vms",
    name: str = "virt-launcher-testvmi-abcde",
    uid: str = POD_UID,
    owners: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    metadata = {"name": name, "namespace": namespace, "uid": uid, "labels": {"kubevirt.io": label}}
    return {"metadata": {**metadata, "ownerReferences": owners or []}}


def owner(kind: str = "VirtualMachineInstance", **fields: Any) -> dict[str, Any]:
    api_version = "kubevirt.io/v1" if kind == "VirtualMachineInstance" else "v1"
    reference = {"apiVersion": api_version, "kind": kind, "name": "testvmi", "uid": VMI_UID}
    return {**reference, "controller": True, **fields}


def vmi_item(
    *, namespace: str = "vms", active: tuple[str, ...] = (POD_UID,), **status: Any
) -> dict[str, Any]:
    metadata = {"name": "testvmi", "namespace": namespace, "uid": VMI_UID}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": metadata,
        "status": {"activePods": dict.fromkeys(active, "node-a"), **status},
    }


def index_of(*items: dict[str, Any]) -> Index:
    index = Index()
    for item in items:
        instance = read_instance(item)
        assert instance is not None
        index.add(instance)
    return index


def test_a_launcher_its_vmi_counts_is_vouched_for() -> None:
    assert vouch(pod(owners=[owner()]), index_of(vmi_item()), POLICY) == Vouching(
        True, "VMI vms/testvmi lists it in status.activePods"
    )


def test_an_owner_reference_of_an_older_api_version_is_still_kubevirts() -> None:
    old = owner(apiVersion="kubevirt.io/v1alpha3")  # what v0.20's virt-controller wrote
    vouching = vouch(pod(owners=[old]), index_of(vmi_item()), POLICY)
    assert vouching is not None and vouching.vouched


@pytest.mark.parametrize(
    ("owners", "items", "why"),
    [
        ([], [vmi_item()], "no controlling ownerReference to a VirtualMachineInstance"),
        (
            [owner(controller=False)],
            [vmi_item()],
            "no controlling ownerReference to a VirtualMachineInstance",
        ),
        (
            [owner(apiVersion="kubevirt.io.evil/v1")],
            [vmi_item()],
            "no controlling ownerReference to a VirtualMachineInstance",
        ),
        (
            [owner(kind="VirtualMachine", apiVersion="kubevirt.io/v1")],
            [vmi_item()],
            "no controlling ownerReference to a VirtualMachineInstance",
        ),
        ([owner()], [], "its controller, VMI vms/testvmi, does not exist"),
        (
            [owner()],
            [vmi_item(namespace="other")],
            "its controller, VMI vms/testvmi, does not exist",
        ),
        (
            [owner(uid="another")],
            [vmi_item()],
            "its controlling ownerReference has another uid than VMI vms/testvmi",
        ),
        (
            [owner()],
            [vmi_item(active=("someone-else",))],
            "VMI vms/testvmi does not list it in status.activePods",
        ),
        (
            [owner()],
            [{**vmi_item(), "status": {"phase": "Running"}}],
            "VMI vms/testvmi does not list it in status.activePods",
        ),
    ],
)
def test_a_launcher_not_vouched_for_says_what_is_missing(
    owners: list[dict[str, Any]], items: list[dict[str, Any]], why: str
) -> None:
    assert vouch(pod(owners=owners), index_of(*items), POLICY) == Vouching(False, why)


def test_nothing_is_vouched_for_when_the_vmis_could_not_be_read() -> None:
    index = Index(unreadable="403 Forbidden")
    assert vouch(pod(owners=[owner()]), index, POLICY) == Vouching(
        False, "VirtualMachineInstances not read (403 Forbidden)"
    )


def test_other_pods_need_no_vouching() -> None:
    assert vouch(pod("virt-handler"), index_of(vmi_item()), POLICY) is None
    assert vouch({"metadata": {"name": "plain"}}, Index(unreadable="x"), POLICY) is None


def hotplug(
    name: str = "hp-volume-x", uid: str = "hp-uid", *, launcher_uid: str = POD_UID
) -> dict[str, Any]:
    launcher = owner("Pod", **{**LAUNCHER, "uid": launcher_uid})
    return pod("hotplug-disk", name=name, uid=uid, owners=[launcher])


def attached(name: str = "hp-volume-x", uid: str = "hp-uid") -> dict[str, Any]:
    volume = {"name": "disk1", "hotplugVolume": {"attachPodName": name, "attachPodUID": uid}}
    return vmi_item(volumeStatus=[volume])


def test_a_hotplug_pod_of_a_counted_launcher_that_the_vmi_names_is_vouched_for() -> None:
    assert vouch(hotplug(), index_of(attached()), POLICY) == Vouching(
        True,
        "VMI vms/testvmi lists its owner virt-launcher-testvmi-abcde in status.activePods and it "
        "in volumeStatus",
    )
    # Named before it is ready: virt-controller writes the uid only once it is (storage.go).
    vouching = vouch(hotplug(), index_of(attached(uid="")), POLICY)
    assert vouching is not None and vouching.vouched


@pytest.mark.parametrize(
    ("candidate", "items", "why"),
    [
        (
            pod("hotplug-disk", owners=[owner()]),
            [attached()],
            "no controlling ownerReference to a launcher pod",
        ),
        (
            hotplug(launcher_uid="not-counted"),
            [attached()],
            "no VMI of vms lists its owner virt-launcher-testvmi-abcde in status.activePods",
        ),
        (hotplug(), [vmi_item()], "VMI vms/testvmi does not name it in status.volumeStatus"),
        (
            hotplug(uid="a-second-pod"),
            [attached()],
            "VMI vms/testvmi does not name it in status.volumeStatus",
        ),
        (
            hotplug(),
            [{**attached(), "metadata": {**attached()["metadata"], "namespace": "other"}}],
            "no VMI of vms lists its owner virt-launcher-testvmi-abcde in status.activePods",
        ),
    ],
)
def test_a_hotplug_pod_not_vouched_for_says_what_is_missing(
    candidate: dict[str, Any], items: list[dict[str, Any]], why: str
) -> None:
    assert vouch(candidate, index_of(*items), POLICY) == Vouching(False, why)


def test_read_instance_keeps_what_vouching_needs_and_skips_what_is_not_a_vmi() -> None:
    assert read_instance(attached()) == Instance(
        "vms",
        "testvmi",
        VMI_UID,
        frozenset({POD_UID}),
        frozenset({("hp-volume-x", "hp-uid")}),
    )
    broken: Any
    for broken in (None, [], {"metadata": {"name": "x"}}, {"metadata": "x"}):
        assert read_instance(broken) is None
    odd = {**vmi_item(), "status": {"activePods": ["not", "a", "map"], "volumeStatus": [1, {}]}}
    assert read_instance(odd) == Instance("vms", "testvmi", VMI_UID)
