"""Hostile and malformed reviews through the HTTP app: never a 5xx, always a named answer.

The webhook is an HTTP server any pod in the cluster may reach, so it has to survive what no
API server would send. Every 5xx here is a bug.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.kube_standin import node_object
from tests.webhook.conftest import load_fixture
from webhook.app import WebhookSettings, create_app
from webhook.feasibility import NodeSnapshot
from webhook.nodes import trim

UID = "f00dfeed-0000-4000-8000-00000000dead"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(WebhookSettings())) as test_client:
        yield test_client


def post(client: TestClient, endpoint: str, body: bytes) -> Any:
    return client.post(endpoint, content=body, headers={"Content-Type": "application/json"})


def skipped_review(metadata: bytes, *, kind: str = "ConfigMap", operation: str = "CREATE") -> bytes:
    """A review the rules skip (not a launcher pod CREATE), its object's metadata as raw JSON."""
    return (
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"%s",'
        b'"kind":{"group":"","version":"v1","kind":"%s"},"operation":"%s",'
        b'"object":{"metadata":%s}}}' % (UID.encode(), kind.encode(), operation.encode(), metadata)
    )


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
@pytest.mark.parametrize(
    "metadata",
    [
        b'"a string"',
        b"[1, 2]",
        b"7",
        b"true",
        b'{"name": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"generateName": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
    ],
    ids=["string", "list", "number", "boolean", "deep-name", "deep-generate-name"],
)
@pytest.mark.parametrize(
    ("kind", "operation"), [("ConfigMap", "CREATE"), ("Pod", "DELETE"), ("Pod", "CONNECT")]
)
def test_metadata_of_a_skipped_object_is_never_read_into_a_500(
    client: TestClient, endpoint: str, metadata: bytes, kind: str, operation: str
) -> None:
    """Skipped objects are not schema-checked, yet the log line names them: it must not crash.

    Was a 500: `review.Request.display_name` called `.get` on whatever `metadata` was, and
    `str()` of a 1000-deep name raised RecursionError.
    """
    response = post(client, endpoint, skipped_review(metadata, kind=kind, operation=operation))
    assert response.status_code == 200, response.text
    answer = response.json()["response"]
    assert answer == {"uid": UID, "allowed": True}


# --- with the node view on, the scheduling fields are read too -------------------------------

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def node_affinity(required: Any) -> dict[str, Any]:
    return {"nodeAffinity": {REQUIRED: required}}


def terms(*items: Any) -> dict[str, Any]:
    return node_affinity({"nodeSelectorTerms": list(items)})


#: (spec field, malformed value, the JSON path the 400 must name under `$.request.object.spec`)
MALFORMED_SCHEDULING = [
    ("nodeSelector", "zone-a", ".nodeSelector"),
    ("nodeSelector", ["zone-a"], ".nodeSelector"),
    ("nodeSelector", {"zone": 1}, ".nodeSelector['zone']"),
    ("nodeName", ["node-a"], ".nodeName"),
    ("tolerations", "all", ".tolerations"),
    ("tolerations", ["all"], ".tolerations[0]"),
    ("tolerations", [{"key": ["k"], "operator": "Equal"}], ".tolerations[0].key"),
    ("tolerations", [{"key": "k", "value": {"v": 1}}], ".tolerations[0].value"),
    ("affinity", "anywhere", ".affinity"),
    ("affinity", {"nodeAffinity": "anywhere"}, ".affinity.nodeAffinity"),
    ("affinity", node_affinity("anywhere"), f".affinity.nodeAffinity.{REQUIRED}"),
    (
        "affinity",
        node_affinity({"nodeSelectorTerms": "anywhere"}),
        f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms",
    ),
    ("affinity", terms("anywhere"), f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0]"),
    (
        "affinity",
        terms({"matchExpressions": "zone in (a)"}),
        f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0].matchExpressions",
    ),
    (
        "affinity",
        terms({"matchExpressions": [{"key": ["zone"], "operator": "Exists"}]}),
        f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].key",
    ),
    (
        "affinity",
        terms({"matchFields": [{"key": "metadata.name", "operator": "In", "values": "node-a"}]}),
        f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0].matchFields[0].values",
    ),
]


@pytest.fixture(scope="module")
def client_with_nodes() -> Iterator[TestClient]:
    """The app with a synced node view in which every filter reads the pod: a cordoned node, a
    tainted one, one without kvm and a plain one."""
    nodes = (
        node_object("cordoned", unschedulable=True),
        node_object("tainted", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        node_object("no-kvm", kvm=None),
        node_object("plain", labels={"zone": "a"}),
    )
    snapshot = NodeSnapshot(nodes=tuple(trim(node) for node in nodes), synced=True)
    with TestClient(create_app(WebhookSettings(), nodes=lambda: snapshot)) as test_client:
        yield test_client


@pytest.mark.parametrize(("field", "value", "path"), MALFORMED_SCHEDULING)
def test_malformed_scheduling_fields_are_a_400_naming_their_path_when_nodes_are_watched(
    client_with_nodes: TestClient, field: str, value: Any, path: str
) -> None:
    """Was a 500: `feasibility` read nodeSelector, affinity and tolerations unchecked."""
    document = load_fixture("v1-launcher-2018-privileged.json")
    document["request"]["object"]["spec"][field] = value
    response = post(client_with_nodes, "/mutate", orjson.dumps(document))
    assert response.status_code == 400, response.text
    cause = response.json()["details"]["causes"][0]
    assert cause["field"] == "$.request.object.spec" + path


def test_well_formed_scheduling_fields_are_judged_not_refused(
    client_with_nodes: TestClient,
) -> None:
    document = load_fixture("v1-launcher-2018-privileged.json")
    document["request"]["object"]["spec"].update(
        nodeSelector={"zone": "a"},
        tolerations=[{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        affinity=terms(
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
        ),
        nodeName=None,
    )
    response = post(client_with_nodes, "/mutate", orjson.dumps(document))
    assert response.status_code == 200, response.text
    assert response.json()["response"]["allowed"] is True
