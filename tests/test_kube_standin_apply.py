"""The API stand-in's PolicyReports and server-side apply, through the real `kubernetes` client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube_standin import MAX_OBJECT_BYTES, StandIn

#: CustomObjectsApi, called with plain dicts as bodies (its annotations want models).
Custom = Any
WHERE = ("wgpolicyk8s.io", "v1alpha2")
APPLY = "application/apply-patch+yaml"


@pytest.fixture
def custom(stand_in_client: client.ApiClient) -> Custom:
    return client.CustomObjectsApi(stand_in_client)


def policy_report(name: str = "r", namespace: str = "vms", **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "a"}},
        "summary": {"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0},
        "results": [{"policy": "p", "rule": "r", "result": "pass", "severity": "medium"}],
        **fields,
    }


def apply(custom: Custom, body: dict[str, Any], manager: str = "me", **options: Any) -> Any:
    """The object as the apply left it (read raw: the client maps no body for a 201)."""
    response = custom.patch_namespaced_custom_object(
        *WHERE,
        body["metadata"]["namespace"],
        "policyreports",
        body["metadata"]["name"],
        body,
        field_manager=manager,
        _content_type=APPLY,
        _preload_content=False,
        **options,
    )
    return json.loads(response.data)


def status_of(call: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as raised:
        call()
    assert raised.value.body is not None, "a refusal without a Status body"
    body = json.loads(raised.value.body)
    assert body["kind"] == "Status" and body["code"] == raised.value.status
    return raised.value.status, body["reason"]


def version(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


def test_policy_reports_are_created_read_listed_by_label_and_deleted(custom: Custom) -> None:
    custom.create_namespaced_custom_object(*WHERE, "vms", "policyreports", policy_report("a"))
    other = policy_report("b", "prod")
    other["metadata"]["labels"] = {"team": "b"}
    custom.create_namespaced_custom_object(*WHERE, "prod", "policyreports", other)
    got = custom.get_namespaced_custom_object(*WHERE, "vms", "policyreports", "a")
    assert got["kind"] == "PolicyReport" and got["metadata"]["uid"]
    listed = custom.list_cluster_custom_object(*WHERE, "policyreports", label_selector="team=a")
    assert listed["kind"] == "PolicyReportList"
    assert [r["metadata"]["name"] for r in listed["items"]] == ["a"]
    custom.delete_namespaced_custom_object(*WHERE, "vms", "policyreports", "a")
    assert status_of(
        lambda: custom.get_namespaced_custom_object(*WHERE, "vms", "policyreports", "a")
    ) == (404, "NotFound")


def test_an_apply_creates_then_changes_only_what_differs(stand_in: StandIn, custom: Custom) -> None:
    created = apply(custom, policy_report(), force=True)
    assert stand_in.requests[-1].status == 201
    assert stand_in.requests[-1].content_type == APPLY
    again = apply(custom, policy_report(), force=True)
    assert version(again) == version(created), "the same apply changes nothing"
    assert again["metadata"]["uid"] == created["metadata"]["uid"]
    events = len(stand_in.store.events)
    changed = policy_report(summary={"pass": 2, "fail": 0, "warn": 0, "error": 0, "skip": 0})
    updated = apply(custom, changed, force=True)
    assert int(version(updated)) > int(version(created))
    assert updated["summary"]["pass"] == 2
    assert [e.type for e in stand_in.store.events[events:]] == ["MODIFIED"]


def test_a_field_the_manager_no_longer_applies_is_removed_but_not_anothers(
    custom: Custom,
) -> None:
    body = policy_report()
    body["metadata"]["annotations"] = {"mine": "1"}
    apply(custom, body, force=True)
    theirs = {"metadata": {"name": "r", "namespace": "vms", "annotations": {"theirs": "2"}}}
    apply(custom, {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport", **theirs}, "x")
    body["metadata"].pop("annotations")
    body.pop("results")
    after = apply(custom, body, force=True)
    assert after["metadata"]["annotations"] == {"theirs": "2"}
    assert "results" not in after
    body["metadata"]["labels"] = {}
    assert apply(custom, body, force=True)["metadata"]["labels"] == {}


def test_another_managers_field_is_a_conflict_unless_forced(custom: Custom) -> None:
    apply(custom, policy_report(), "first")
    body = policy_report(summary={"pass": 9, "fail": 0, "warn": 0, "error": 0, "skip": 0})
    assert status_of(lambda: apply(custom, body, "second")) == (409, "Conflict")
    assert apply(custom, body, "second", force=True)["summary"]["pass"] == 9
    # The same value from another manager is no conflict.
    assert apply(custom, body, "third")["summary"]["pass"] == 9


def test_an_apply_needs_a_field_manager_and_the_right_kind(custom: Custom) -> None:
    body = policy_report()
    no_manager = lambda: custom.patch_namespaced_custom_object(  # noqa: E731
        *WHERE, "vms", "policyreports", "r", body, _content_type=APPLY
    )
    assert status_of(no_manager) == (400, "BadRequest")
    assert status_of(lambda: apply(custom, {**body, "kind": "Pod"})) == (400, "BadRequest")


def test_the_schema_refuses_what_the_crd_refuses(custom: Custom) -> None:
    bad = policy_report(results=[{"policy": "p", "result": "denied"}])
    assert status_of(lambda: apply(custom, bad)) == (422, "Invalid")
    no_policy = policy_report(results=[{"rule": "r", "result": "pass"}])
    assert status_of(lambda: apply(custom, no_policy)) == (422, "Invalid")
    numbers = policy_report(results=[{"policy": "p", "properties": {"n": 1}}])
    assert status_of(lambda: apply(custom, numbers)) == (422, "Invalid")


def test_an_object_over_etcds_limit_is_refused(custom: Custom) -> None:
    huge = policy_report(results=[{"policy": "p", "message": "x" * MAX_OBJECT_BYTES}])
    assert status_of(lambda: apply(custom, huge)) == (500, "InternalError")


def test_without_the_crd_an_apply_is_404(stand_in: StandIn, custom: Custom) -> None:
    stand_in.missing.add("wgpolicyk8s.io/v1alpha2")
    assert status_of(lambda: apply(custom, policy_report())) == (404, "NotFound")
