"""Hostile and malformed reviews through the HTTP app: never a 5xx, always a named answer.

The webhook is an HTTP server any pod in the cluster may reach, so it has to survive what no
API server would send. Every 5xx here is a bug.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from webhook.app import WebhookSettings, create_app

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
