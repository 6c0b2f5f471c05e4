"""One admission endpoint as a plain ASGI callable: the webhook's hot path, without a framework.

Every launcher pod creation waits on this, so it does the least that is correct: read the raw
body once (bounded by Content-Length, then while streaming), parse it with orjson, run the
pure rules, answer with bytes. Measured (docs/benchmarks.md), FastAPI's routing, dependency
solving and middleware cost more per request than the rules themselves; FastAPI still serves
everything else on the port (the OpenAPI description, 404s) and owns the lifespan.

Errors are told apart on purpose: 400 names the JSON path of bad input, 413 a body over the
limit, 503 a server too busy to hold another large body or a decision over its deadline, and a
bug is a 500 (logged with its traceback) — never disguised as bad input.

Memory and time are bounded for hostile input too. Bodies up to `INLINE_BODY_BYTES` (every real
launcher pod) are read and decided on the event loop at once. A larger body first reserves its
size from the process-wide `BodyBudget` (refused with 503 and closed when it does not fit, so
a hundred clients dribbling 6 MiB bodies hold at most the budget, not 600 MiB) and is decided on
one worker thread: the event loop keeps answering small reviews meanwhile (the GIL passes
between threads every few milliseconds), only one large body is parsed at a time, and its
reservation is returned only when the thread is done with it. An answer not ready within
`DECISION_SECONDS` is a 503: the API server has given up by then (timeoutSeconds ≤ 3 s in the
manifests), and the client learns why instead of timing out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Executor
from typing import Any, Literal

import orjson

from virtdev import logs
from webhook.admission import Request
from webhook.options import DEFAULT_MAX_BUFFERED_BYTES
from webhook.rules.answer import Answer, Verdict
from webhook.rules.shapes import BadInput
from webhook.serving import review
from webhook.serving.metrics import WebhookMetrics

log = logging.getLogger("virtdev.webhook")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Decide = Callable[[Request], Answer]

_JSON_HEADERS = [(b"content-type", b"application/json")]
#: A denial's log line names at most this many violations, each at most this long: a hostile
#: review with thousands of them must not make a megabyte log line.
LOGGED_VIOLATIONS = 10
LOGGED_VIOLATION_CHARS = 200

#: Bodies up to this size are decided on the event loop without a reservation: real launcher
#: pods are 5-20 KiB, and uvicorn reads ahead this much per connection anyway.
INLINE_BODY_BYTES = 64 * 1024
#: Longer than any decision the rules take at the body limit, shorter than the API server waits.
DECISION_SECONDS = 2.0


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client disconnected before sending its whole body: nobody to answer."""


class Busy(Exception):
    """Large bodies in flight already hold the whole budget."""


class DecisionLate(Exception):
    """The worker thread did not decide within `DECISION_SECONDS`."""


class BodyBudget:
    """Bytes of large bodies held at once across all requests (used on the event loop only)."""

    def __init__(self, limit: int = DEFAULT_MAX_BUFFERED_BYTES) -> None:
        if limit < 0:
            raise ValueError(f"max-buffered-bytes must not be negative, got {limit}")
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class Reservation:
    """One request's share of the budget: grown as its body proves large, returned once."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def grow_to(self, size: int) -> None:
        if size <= INLINE_BODY_BYTES or size <= self.size:
            return
        if not self._budget.take(size - self.size):
            raise Busy
        self.size = size

    def release(self) -> None:
        self._budget.give(self.size)
        self.size = 0

    def hand_over(self) -> Reservation:
        """A new reservation holding this one's share, which is left holding nothing."""
        other = Reservation(self._budget)
        other.size, self.size = self.size, 0
        return other


async def read_body(
    scope: Scope, receive: Receive, limit: int, reservation: Reservation | None = None
) -> bytes:
    """The whole body, refusing early (by Content-Length) or as soon as the limit is passed;
    a large body is reserved before it is read (all of a declared length at once)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            if int(value) > limit:
                raise BodyTooLarge
            if reservation is not None:
                reservation.grow_to(int(value))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if reservation is not None:
            reservation.grow_to(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def logged_violations(violations: list[str]) -> list[str]:
    """The violations as the log line carries them: capped in number and length."""
    shown = [
        v if len(v) <= LOGGED_VIOLATION_CHARS else v[:LOGGED_VIOLATION_CHARS] + "…"
        for v in violations[:LOGGED_VIOLATIONS]
    ]
    if len(violations) > LOGGED_VIOLATIONS:
        shown.append(f"and {len(violations) - LOGGED_VIOLATIONS} more")
    return shown


def status_body(
    code: int, reason: str, message: str, path: str | None = None, problem: str = ""
) -> bytes:
    """A Kubernetes-style Status, so kubectl users recognise it; never much over 12 KiB (a path
    or message may quote hostile input: a 5 MiB key)."""
    message = review.fit_text(message, review.MAX_MESSAGE_BYTES)
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if path is not None:
        cause = review.fit_text(problem, review.MAX_MESSAGE_BYTES) if problem else message
        field = review.fit_text(path, review.MAX_MESSAGE_BYTES)
        body["details"] = {"causes": [{"field": field, "message": cause}]}
    return orjson.dumps(body)


async def respond(
    send: Send, status: int, body: bytes, *, allow: bytes | None = None, close: bool = False
) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if allow is not None:
        headers.append((b"allow", allow))
    if close:  # answered before the body was read: the rest of it is not waited for
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: The verdict label of virtdev_webhook_requests: the rules' verdict, or what kept them from one.
RequestVerdict = (
    Verdict | Literal["bad_request", "too_large", "busy", "late", "error", "client_gone"]
)
#: Status, body, verdict, patch operations of an answer, and whether to close the connection.
Outcome = tuple[int, bytes, RequestVerdict, int, bool]


class AdmissionEndpoint:
    """POST handler for /mutate, /validate or /guard; `decide` is the pure rule for the endpoint."""

    def __init__(
        self,
        name: str,
        decide: Decide,
        *,
        max_body_bytes: int,
        metrics: WebhookMetrics,
        budget: BodyBudget | None = None,
        worker: Executor | None = None,
    ) -> None:
        self.name = name
        self._decide = decide
        self._limit = max_body_bytes
        self._admissions = metrics.admissions
        self._budget = budget if budget is not None else BodyBudget()
        self._worker = worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        verdict: RequestVerdict = "error"
        patch_operations = 0
        reservation = Reservation(self._budget)
        try:
            status, body, verdict, patch_operations, close = await self._answer(
                scope, receive, started, reservation
            )
            await respond(send, status, body, close=close)
        except ClientGone:
            verdict = "client_gone"
        finally:
            reservation.release()  # nothing left to return once the worker holds it
            seconds = time.perf_counter() - started
            self._admissions.observe(self.name, verdict, seconds, patch_operations)

    def _decide_body(self, body: bytes) -> tuple[Request, Answer, bytes]:
        """Parse, decide, render: all the CPU work of one request, for either thread."""
        parsed = review.parse(body)
        result = self._decide(parsed)
        return parsed, result, orjson.dumps(review.render(parsed, result))

    async def _decide_on_worker(
        self, body: bytes, reservation: Reservation
    ) -> tuple[Request, Answer, bytes]:
        assert self._worker is not None
        future = asyncio.get_running_loop().run_in_executor(self._worker, self._decide_body, body)
        held = reservation.hand_over()  # the worker holds it now: returned when the thread is done

        def done(finished: asyncio.Future[Any]) -> None:
            held.release()
            if not finished.cancelled():
                finished.exception()  # retrieved: a late bug or 400 is not "never retrieved"

        future.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), DECISION_SECONDS)
        except TimeoutError:
            raise DecisionLate from None

    async def _answer(
        self, scope: Scope, receive: Receive, started: float, reservation: Reservation
    ) -> Outcome:
        try:
            try:
                body = await read_body(scope, receive, self._limit, reservation)
                if self._worker is not None and len(body) > INLINE_BODY_BYTES:
                    parsed, result, answer = await self._decide_on_worker(body, reservation)
                else:
                    parsed, result, answer = self._decide_body(body)
            except BodyTooLarge:
                message = f"request body exceeds {self._limit} bytes"
                body = status_body(413, "RequestEntityTooLarge", message)
                return 413, body, "too_large", 0, True
            except Busy:
                message = (
                    f"large request bodies in flight already hold {self._budget.held} of "
                    f"{self._budget.limit} bytes (--max-buffered-bytes); try again"
                )
                return 503, status_body(503, "ServiceUnavailable", message), "busy", 0, True
            except DecisionLate:
                message = f"no decision within {DECISION_SECONDS:g} s; the request was too costly"
                log.warning(message, extra={"endpoint": self.name})
                return 503, status_body(503, "ServiceUnavailable", message), "late", 0, False
            except BadInput as error:
                text = review.fit_text(str(error), review.MAX_MESSAGE_BYTES)
                log.info("bad admission request", extra={"endpoint": self.name, "error": text})
                body = status_body(400, "BadRequest", text, error.path, error.problem)
                return 400, body, "bad_request", 0, False
            if result.verdict != "skipped" or log.isEnabledFor(logging.DEBUG):
                fields = {
                    "endpoint": self.name,
                    "uid": parsed.uid,
                    "pod": parsed.display_name,
                    "operation": parsed.operation,
                    "verdict": result.verdict,
                    "patch_ops": len(result.patch),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                }
                if result.violations:  # denied, or warned under --enforcement warn: say why, who
                    fields["user"] = parsed.username
                    fields["violations"] = logged_violations(result.violations)
                if result.verdict == "skipped":
                    log.debug("admission skipped", extra=fields)
                else:  # one line per launcher pod: the buffered fast path (virtdev.logs)
                    logs.hot(log, "admission " + result.verdict, fields)
            return 200, answer, result.verdict, len(result.patch), False
        except ClientGone:
            raise
        except Exception:
            log.exception("bug while answering an admission request", extra={"endpoint": self.name})
            message = "internal error in virtdev webhook; see its logs"
            return 500, status_body(500, "InternalError", message), "error", 0, False
