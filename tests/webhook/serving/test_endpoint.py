"""The admission endpoint's bounds on memory and time: the budget for large bodies, and the
deadline of a decision made on the worker thread (the rest is tested through HTTP elsewhere)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.webhook.conftest import load_fixture
from webhook.admission import Request, validate_review
from webhook.rules.answer import Answer
from webhook.rules.policy import LauncherPolicy
from webhook.serving.endpoint import (
    DECISION_SECONDS,
    INLINE_BODY_BYTES,
    AdmissionEndpoint,
    BodyBudget,
    Busy,
    Receive,
    Reservation,
    Scope,
    Send,
)
from webhook.serving.metrics import WebhookMetrics


def test_small_bodies_take_nothing_from_the_budget() -> None:
    budget = BodyBudget(0)
    reservation = Reservation(budget)
    reservation.grow_to(INLINE_BODY_BYTES)
    assert reservation.size == 0 and budget.held == 0


def test_a_reservation_grows_with_its_body_until_the_budget_is_spent_and_returns_it_all() -> None:
    budget = BodyBudget(1000 * 1024)
    first, second = Reservation(budget), Reservation(budget)
    first.grow_to(100 * 1024)
    first.grow_to(600 * 1024)
    first.grow_to(500 * 1024)  # never shrinks while the body is held
    assert budget.held == first.size == 600 * 1024
    with pytest.raises(Busy):
        second.grow_to(500 * 1024)
    assert budget.held == 600 * 1024 and second.size == 0
    second.grow_to(400 * 1024)
    assert budget.held == budget.limit
    first.release()
    first.release()  # returned once
    second.release()
    assert budget.held == 0


def large_review() -> bytes:
    document = load_fixture("v1-launcher-2018-privileged.json")
    document["request"]["object"]["metadata"]["annotations"] = {
        "pad": "x" * (2 * INLINE_BODY_BYTES)
    }
    return orjson.dumps(document)


def serving(endpoint: AdmissionEndpoint) -> TestClient:
    """A TestClient whose one event loop lives as long as the client (entered with `with`)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await endpoint(scope, receive, send)
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    return TestClient(app)


@pytest.fixture
def worker() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def test_a_large_body_is_decided_on_the_worker_thread_and_its_share_returned(
    worker: ThreadPoolExecutor,
) -> None:
    threads: list[str] = []

    def decide(request: Request) -> Answer:
        threads.append(threading.current_thread().name)
        return validate_review(request, LauncherPolicy())

    budget = BodyBudget(1024 * 1024)
    endpoint = AdmissionEndpoint(
        "validate", decide, max_body_bytes=1024 * 1024, metrics=WebhookMetrics.create(),
        budget=budget, worker=worker,
    )  # fmt: skip
    small = orjson.dumps(load_fixture("v1-launcher-2018-privileged.json"))
    with serving(endpoint) as client:
        reply = client.post("/validate", content=large_review())
        assert reply.json()["response"]["allowed"] is False
        assert client.post("/validate", content=small).json()["response"]["allowed"] is False
        assert budget.held == 0
    assert threads[0].startswith("ThreadPoolExecutor") and threads[1] != threads[0]


def test_a_decision_over_its_deadline_is_a_503_and_keeps_its_share_until_the_thread_is_done(
    worker: ThreadPoolExecutor,
) -> None:
    proceed = threading.Event()

    def stuck(request: Request) -> Answer:
        proceed.wait(timeout=60)
        return Answer(allowed=True, verdict="allowed")

    budget = BodyBudget(1024 * 1024)
    endpoint = AdmissionEndpoint(
        "validate", stuck, max_body_bytes=1024 * 1024, metrics=WebhookMetrics.create(),
        budget=budget, worker=worker,
    )  # fmt: skip
    body = large_review()
    with serving(endpoint) as client:
        started = time.monotonic()
        reply = client.post("/validate", content=body)
        elapsed = time.monotonic() - started
        assert reply.status_code == 503, reply.text
        assert reply.json()["message"].startswith(f"no decision within {DECISION_SECONDS:g} s")
        assert DECISION_SECONDS <= elapsed < DECISION_SECONDS + 2
        assert budget.held == len(body), "the thread still holds the body"
        proceed.set()
        worker.submit(lambda: None).result(timeout=30)  # the worker is done with the stuck one
        deadline = time.monotonic() + 10
        while budget.held:  # returned by a callback on the client's event loop
            assert time.monotonic() < deadline, "share never returned"
            time.sleep(0.01)  # polling interval of the condition
