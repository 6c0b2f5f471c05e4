"""schemathesis over real HTTPS: the published OpenAPI description drives generated reviews.

The real `virtdev webhook` process is started on free ports with throwaway certificates; its own
`/openapi.json` (fetched over HTTPS, verified against the dev CA) is what schemathesis generates
from. `webhook/serving/openapi.py` declares the AdmissionReview request bodies (the pod made from
`webhook/rules/shapes.py`'s shapes) because the endpoints read the raw body, so the tool has
something real to work from.

Positive cases (bodies that match the declared schema) and negative ones (bodies that break it)
are sent to /mutate and /validate. Checks: no 5xx (a 500 is declared, as "a bug in virtdev",
but must never happen), a declared status code, a declared content type, and a body that matches
the schema declared for its status. `negative_data_rejection` is left out on purpose: the
webhook checks only the fields it reads, so a body wrong in a field it never reads (`dryRun`,
`resource.group`) is answered 200, as the API server would have validated it already.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.webhook.serving.test_e2e import Webhook, start_webhook

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Each example is a real HTTPS round trip on a loaded 2-core CI machine: keep them few.
EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    server = start_webhook(tmp_path_factory.mktemp("schemathesis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(webhook: Webhook) -> Any:
    url = f"https://127.0.0.1:{webhook.port}/openapi.json"
    return schemathesis.openapi.from_url(url, verify=str(webhook.ca_cert), timeout=30)


def test_the_published_description_declares_every_request_body(webhook: Webhook) -> None:
    loaded = schemathesis.openapi.from_url(
        f"https://127.0.0.1:{webhook.port}/openapi.json", verify=str(webhook.ca_cert)
    )
    raw: dict[str, Any] = loaded.raw_schema
    assert set(raw["paths"]) == {"/mutate", "/validate", "/guard"}
    for path in ("/mutate", "/validate", "/guard"):
        operation = raw["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body["required"] == ["apiVersion", "kind", "request"]
        assert "object" in body["properties"]["request"]["properties"]
        assert set(operation["responses"]) == {"200", "400", "413", "500"}


@pytest.mark.parametrize("path", ["/mutate", "/validate", "/guard"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_generated_reviews_are_never_a_server_error_and_match_the_description(
    api_schema: Any, webhook: Webhook, path: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_path("POST", path)
    assert operation is not None
    seen: collections.Counter[int] = collections.Counter()

    @EXAMPLES
    @given(case=operation.as_strategy(generation_mode=mode))
    def answered_as_described(case: Any) -> None:
        response = case.call(verify=str(webhook.ca_cert), timeout=30)
        case.validate_response(response, checks=CHECKS)
        seen[response.status_code] += 1
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            assert response.json()["details"]["causes"][0]["field"].startswith("$")

    answered_as_described()
    # The generation reached the rules, not just the envelope checks.
    assert seen[200 if mode is GenerationMode.POSITIVE else 400] > 0, seen


def test_the_server_is_still_serving_after_the_generated_reviews(webhook: Webhook) -> None:
    webhook.assert_still_serving()
    assert webhook.process.poll() is None
    assert "Traceback" not in webhook.log.read_text(errors="replace")
