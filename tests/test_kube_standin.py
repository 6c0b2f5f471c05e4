"""The Kubernetes API stand-in answers as the API server would, through the real client."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube_standin import StandIn, merge_patch

#: The client's APIs as the tests call them: with plain dicts for bodies (the JSON the stand-in
#: reads, which the client sends as they are), which its models' annotations do not allow.
Core = Any

ADMISSION = "admissionregistration.k8s.io/v1"


@pytest.fixture
def core(stand_in_client: client.ApiClient) -> Core:
    return client.CoreV1Api(stand_in_client)


@pytest.fixture
def admission(core: Core) -> Core:
    return client.AdmissionregistrationV1Api(core.api_client)


def secret(name: str = "s", **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


def status_of(call: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as raised:
        call()
    assert raised.value.body is not None, "a refusal without a Status body"
    body = json.loads(raised.value.body)
    assert body["kind"] == "Status" and body["code"] == raised.value.status
    return raised.value.status, body["reason"]


def test_reading_a_missing_object_is_404_not_found(core: Core) -> None:
    assert status_of(lambda: core.read_namespaced_secret("nope", "ns")) == (404, "NotFound")


def test_replacing_a_missing_object_is_404(core: Core) -> None:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="nope"))
    assert status_of(lambda: core.replace_namespaced_secret("nope", "ns", body))[0] == 404


def test_creating_twice_is_409_already_exists(core: Core) -> None:
    core.create_namespaced_secret("ns", secret())
    assert status_of(lambda: core.create_namespaced_secret("ns", secret())) == (
        409,
        "AlreadyExists",
    )


def test_an_update_with_a_stale_resource_version_is_409_conflict(core: Core) -> None:
    created = core.create_namespaced_secret("ns", secret(a="1"))
    first = core.read_namespaced_secret("s", "ns")
    second = core.read_namespaced_secret("s", "ns")
    first.data = {"a": base64.b64encode(b"2").decode()}
    updated = core.replace_namespaced_secret("s", "ns", first)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    second.data = {"a": base64.b64encode(b"3").decode()}
    assert status_of(lambda: core.replace_namespaced_secret("s", "ns", second)) == (
        409,
        "Conflict",
    )
    assert core.read_namespaced_secret("s", "ns").data == {"a": "Mg=="}


def test_an_update_without_resource_version_is_unconditional(core: Core) -> None:
    core.create_namespaced_secret("ns", secret(a="1"))
    core.replace_namespaced_secret("s", "ns", secret(a="2"))
    assert core.read_namespaced_secret("s", "ns").data == {"a": "Mg=="}


def test_a_merge_patch_merges_deletes_with_null_and_checks_a_resource_version(
    stand_in: StandIn, admission: Core
) -> None:
    stand_in.put_object(
        {
            "apiVersion": ADMISSION,
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "m", "labels": {"a": "1", "b": "2"}},
            "webhooks": [],
        }
    )
    rv = stand_in.get_object(ADMISSION, "mutatingwebhookconfigurations", "", "m")["metadata"][
        "resourceVersion"
    ]
    merge = "application/merge-patch+json"
    admission.patch_mutating_webhook_configuration(
        "m", {"metadata": {"labels": {"a": None, "c": "3"}}}, _content_type=merge
    )
    stored = stand_in.get_object(ADMISSION, "mutatingwebhookconfigurations", "", "m")
    assert stored["metadata"]["labels"] == {"b": "2", "c": "3"}
    stale = {"metadata": {"resourceVersion": rv, "labels": {"d": "4"}}}
    assert status_of(
        lambda: admission.patch_mutating_webhook_configuration("m", stale, _content_type=merge)
    ) == (409, "Conflict")


def test_a_json_patch_applies_and_a_stale_resource_version_in_it_is_409(
    stand_in: StandIn, admission: Core
) -> None:
    stand_in.put_object(
        {
            "apiVersion": ADMISSION,
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "v"},
            "webhooks": [{"name": "w", "clientConfig": {"url": "https://x"}}],
        }
    )
    read = stand_in.get_object(ADMISSION, "validatingwebhookconfigurations", "", "v")
    rv = read["metadata"]["resourceVersion"]
    ops = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Zm9v"},
    ]
    admission.patch_validating_webhook_configuration(
        "v", ops, _content_type="application/json-patch+json", _preload_content=False
    )
    stored = stand_in.get_object(ADMISSION, "validatingwebhookconfigurations", "", "v")
    assert stored["webhooks"][0]["clientConfig"]["caBundle"] == "Zm9v"
    assert int(stored["metadata"]["resourceVersion"]) > int(rv)
    assert status_of(
        lambda: admission.patch_validating_webhook_configuration(
            "v", ops, _content_type="application/json-patch+json"
        )
    ) == (409, "Conflict")
    failing_test = [{"op": "test", "path": "/metadata/name", "value": "other"}]
    assert status_of(
        lambda: admission.patch_validating_webhook_configuration(
            "v", failing_test, _content_type="application/json-patch+json"
        )
    ) == (422, "Invalid")


def _raw(stand_in: StandIn, method: str, path: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(
        stand_in.url + path, data=body, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_strategic_merge_patch_is_not_implemented_and_says_415(stand_in: StandIn) -> None:
    path = "/api/v1/namespaces/ns/secrets/s"
    stand_in.put_object({**secret(), "metadata": {"name": "s", "namespace": "ns"}})
    assert _raw(stand_in, "PATCH", path, b"{}", "application/strategic-merge-patch+json") == 415
    assert _raw(stand_in, "PATCH", path, b"{}", "application/merge-patch+json") == 200


def test_unknown_resources_and_wrong_scopes_are_404(stand_in: StandIn) -> None:
    assert _raw(stand_in, "GET", "/api/v1/namespaces/ns/widgets/w", b"", "") == 404
    assert _raw(stand_in, "GET", "/apis/admissionregistration.k8s.io/v1/namespaces/ns/"
                "mutatingwebhookconfigurations/m", b"", "") == 404  # fmt: skip
    assert _raw(stand_in, "GET", "/nonsense", b"", "") == 404


def test_a_tls_secret_needs_its_two_keys_and_a_type_cannot_change(core: Core) -> None:
    tls = {**secret(), "type": "kubernetes.io/tls"}
    assert status_of(lambda: core.create_namespaced_secret("ns", tls))[0] == 422
    tls["data"] = {"tls.crt": "", "tls.key": ""}
    core.create_namespaced_secret("ns", tls)
    changed = core.read_namespaced_secret("s", "ns")
    changed.type = "Opaque"
    assert status_of(lambda: core.replace_namespaced_secret("s", "ns", changed)) == (
        422,
        "Invalid",
    )


def test_string_data_is_folded_into_data(core: Core) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    core.create_namespaced_secret("ns", {**body, "stringData": {"k": "v"}})
    assert core.read_namespaced_secret("s", "ns").data == {"k": "dg=="}


def test_a_list_carries_the_store_resource_version_and_only_its_namespace(
    stand_in: StandIn, core: Core
) -> None:
    core.create_namespaced_secret("a", secret("one"))
    core.create_namespaced_secret("b", secret("two"))
    listed = core.list_namespaced_secret("a")
    assert [item.metadata.name for item in listed.items] == ["one"]
    assert listed.metadata.resource_version == str(stand_in.store.resource_version) == "2"


def test_the_before_hook_lets_a_test_write_in_between(stand_in: StandIn, core: Core) -> None:
    core.create_namespaced_secret("ns", secret(a="1"))
    mine = core.read_namespaced_secret("s", "ns")

    def someone_else_writes(method: str, key: tuple[str, str, str, str]) -> None:
        if method == "PUT":
            stand_in.before = None
            stand_in.store.update(key, stand_in.store.get(key) | {"metadata": {"name": "s"}})

    stand_in.before = someone_else_writes
    assert status_of(lambda: core.replace_namespaced_secret("s", "ns", mine))[0] == 409
    assert [r.status for r in stand_in.requests] == [201, 200, 409]


def test_merge_patch_follows_rfc_7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3},
        "d": [2],
    }
    assert merge_patch({"a": 1}, "x") == "x"


def pod(name: str, namespace: str = "ns", **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "labels": labels}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}}


def test_lists_page_with_limit_and_continue(stand_in: StandIn, core: Core) -> None:
    for i in range(5):
        stand_in.put_object(pod(f"p{i}", app="x"))
    stand_in.put_object(pod("other"))
    first = core.list_namespaced_pod("ns", label_selector="app=x", limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    # As kube-apiserver: remainingItemCount only for a list without selectors.
    assert first.metadata.remaining_item_count is None
    assert core.list_namespaced_pod("ns", limit=2).metadata.remaining_item_count == 4
    second = core.list_namespaced_pod(
        "ns", label_selector="app=x", limit=2, _continue=first.metadata._continue
    )
    assert [p.metadata.name for p in second.items] == ["p2", "p3"]
    last = core.list_namespaced_pod(
        "ns", label_selector="app=x", limit=2, _continue=second.metadata._continue
    )
    assert [p.metadata.name for p in last.items] == ["p4"]
    assert (
        last.metadata._continue is None
        and last.metadata.resource_version == first.metadata.resource_version
    )


def test_a_continue_token_older_than_a_compaction_is_410(stand_in: StandIn, core: Core) -> None:
    for i in range(3):
        stand_in.put_object(pod(f"p{i}"))
    token = core.list_namespaced_pod("ns", limit=1).metadata._continue
    stand_in.put_object(pod("later"))
    stand_in.compact()
    assert status_of(lambda: core.list_namespaced_pod("ns", limit=1, _continue=token)) == (
        410,
        "Expired",
    )


def vmi(name: str, namespace: str, **active: str) -> dict[str, Any]:
    """A VirtualMachineInstance as virt-controller leaves it: its pods in `status.activePods`."""
    meta = {"name": name, "namespace": namespace}
    status = {"phase": "Running", "activePods": active}
    kind = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance"}
    return {**kind, "metadata": meta, "status": status}


def test_virtual_machine_instances_are_listed_paged_in_a_namespace_and_in_all(
    stand_in: StandIn, core: Core
) -> None:
    custom: Any = client.CustomObjectsApi(core.api_client)
    for i in range(3):
        stand_in.put_object(vmi(f"vm{i}", "vms", **{f"uid-{i}": "node-a"}))
    stand_in.put_object(vmi("db", "prod"))
    first = custom.list_namespaced_custom_object(
        "kubevirt.io", "v1", "vms", "virtualmachineinstances", limit=2
    )
    assert first["kind"] == "VirtualMachineInstanceList"
    assert [v["metadata"]["name"] for v in first["items"]] == ["vm0", "vm1"]
    assert first["items"][0]["status"]["activePods"] == {"uid-0": "node-a"}, "status as stored"
    token = first["metadata"]["continue"]
    rest = custom.list_namespaced_custom_object(
        "kubevirt.io", "v1", "vms", "virtualmachineinstances", limit=2, _continue=token
    )
    assert [v["metadata"]["name"] for v in rest["items"]] == ["vm2"]
    assert "continue" not in rest["metadata"]
    everywhere = custom.list_cluster_custom_object("kubevirt.io", "v1", "virtualmachineinstances")
    assert [(v["metadata"]["namespace"], v["metadata"]["name"]) for v in everywhere["items"]] == [
        ("prod", "db"),
        ("vms", "vm0"),
        ("vms", "vm1"),
        ("vms", "vm2"),
    ]
    paths = [r.path for r in stand_in.requests]
    assert paths == [
        "/apis/kubevirt.io/v1/namespaces/vms/virtualmachineinstances",
        "/apis/kubevirt.io/v1/namespaces/vms/virtualmachineinstances",
        "/apis/kubevirt.io/v1/virtualmachineinstances",
    ]


def test_a_group_the_cluster_does_not_serve_is_404_as_without_its_crd(
    stand_in: StandIn, core: Core
) -> None:
    custom: Any = client.CustomObjectsApi(core.api_client)
    stand_in.put_object(vmi("vm", "vms"))
    stand_in.missing.add("kubevirt.io/v1")
    assert status_of(
        lambda: custom.list_cluster_custom_object("kubevirt.io", "v1", "virtualmachineinstances")
    ) == (404, "NotFound")
    assert status_of(
        lambda: custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", "vms", "virtualmachineinstances"
        )
    ) == (404, "NotFound")
    assert core.list_namespaced_pod("vms").items == [], "the other groups are still served"
