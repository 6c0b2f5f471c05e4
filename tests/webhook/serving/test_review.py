"""The rendered AdmissionReview is bounded whatever the rules found: a denial of a pod with a
million violations is a few KiB, like any other answer."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.webhook.conftest import load_fixture
from webhook.admission import Request
from webhook.rules.answer import MAX_WARNING, Answer
from webhook.serving import review
from webhook.serving.app import WebhookSettings, create_app
from webhook.serving.review import (
    MAX_AUDIT_ANNOTATIONS,
    MAX_AUDIT_VALUE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_WARNINGS,
    fit_text,
    fit_warnings,
)

#: A normal denial is ~1 KiB; every part of one is capped, so all of it stays under this.
MAX_DENIAL_BYTES = 16 * 1024


def request() -> Request:
    return review.parse(orjson.dumps(load_fixture("v1-launcher-2018-privileged.json")))


@pytest.mark.parametrize("text", ["a" * 5000, "é" * 3000, "😀" * 2000, "a" * 4095 + "😀"])
def test_fit_text_cuts_to_the_byte_limit_never_inside_a_character(text: str) -> None:
    cut = fit_text(text, MAX_MESSAGE_BYTES)
    assert len(cut.encode()) <= MAX_MESSAGE_BYTES
    assert cut.endswith("…") and text.startswith(cut[:-1])


@pytest.mark.parametrize("text", ["", "short", "é" * 1024, "a" * MAX_MESSAGE_BYTES])
def test_fit_text_keeps_what_fits(text: str) -> None:
    assert fit_text(text, MAX_MESSAGE_BYTES) == text


def test_fit_warnings_keeps_the_first_and_says_how_many_more() -> None:
    warnings = [f"warning {index} " + "x" * 200 for index in range(100)]
    fitted = fit_warnings(warnings)
    assert len(fitted) == MAX_WARNINGS
    assert fitted[-1] == f"and {100 - MAX_WARNINGS + 1} more warnings"
    assert all(len(text) <= MAX_WARNING for text in fitted)
    assert fitted[0].startswith("warning 0 ")
    assert fit_warnings(["a", "b"]) == ["a", "b"]


def test_a_denial_of_a_million_violations_renders_in_a_few_kib() -> None:
    violations = [f"spec.containers[0].securityContext.capabilities.add[{i}]" for i in range(10**6)]
    answer = Answer(
        allowed=False,
        verdict="denied",
        status_code=403,
        message="launcher pod refused by virtdev: " + "; ".join(violations),
        warnings=violations,
        audit_annotations={f"key-{i}": "; ".join(violations) for i in range(20)},
    )
    rendered = review.render(request(), answer)
    response = rendered["response"]
    assert len(orjson.dumps(rendered)) < MAX_DENIAL_BYTES
    message = response["status"]["message"]
    assert message.startswith("launcher pod refused by virtdev: " + violations[0])
    assert message.endswith("…") and len(message.encode()) <= MAX_MESSAGE_BYTES
    assert len(response["auditAnnotations"]) == MAX_AUDIT_ANNOTATIONS
    assert all(
        len(v.encode()) <= MAX_AUDIT_VALUE_BYTES for v in response["auditAnnotations"].values()
    )
    assert response["warnings"][-1] == f"and {10**6 - MAX_WARNINGS + 1} more warnings"


def test_a_review_of_10_000_unpermitted_capabilities_is_denied_in_a_few_kib_over_http() -> None:
    """Was: a 1.13 MB message for a 41 KB review."""
    document = load_fixture("v1-launcher-2018-privileged.json")
    compute = document["request"]["object"]["spec"]["containers"][0]
    compute["securityContext"] = {"capabilities": {"add": [f"CAP{i}" for i in range(10_000)]}}
    with TestClient(create_app(WebhookSettings())) as client:
        reply = client.post("/validate", content=orjson.dumps(document))
    assert reply.status_code == 200
    assert len(reply.content) < MAX_DENIAL_BYTES
    response = reply.json()["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "spec.containers[0].securityContext.capabilities.add[0]: CAP0 (" in message
    assert message.endswith("; and 9985 more")
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert len(response["auditAnnotations"]["violations"].encode()) <= MAX_AUDIT_VALUE_BYTES
