"""One admission endpoint as a plain ASGI callable: the webhook's hot path, without a framework.

Every launcher pod creation waits on this, so it does the least that is correct: read the raw
body once (bounded by Content-Length, then while streaming), parse it with orjson, run the
pure rules, answer with bytes. Measured (docs/benchmarks.md), FastAPI's routing, dependency
solving and middleware cost more per request than the rules themselves; FastAPI still serves
everything else on the port (the OpenAPI description, 404s) and owns the lifespan.

Errors are told apart on purpose: 400 names the JSON path of bad input, 413 a body over the
limit, and a bug is a 500 (logged with its traceback) — never disguised as bad input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from virtdev import logs
from webhook import review
from webhook.metrics import WebhookMetrics
from webhook.schema import BadInput

log = logging.getLogger("virtdev.webhook")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Decide = Callable[[review.Request], review.Answer]

_JSON_HEADERS = [(b"content-type", b"application/json")]
#: A denial's log line names at most this many violations, each at most this long: a hostile
#: review with thousands of them must not make a megabyte log line.
LOGGED_VIOLATIONS = 10
LOGGED_VIOLATION_CHARS = 200


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client disconnected before sending its whole body: nobody to answer."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing early (by Content-Length) or as soon as the limit is passed."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge
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
    """A Kubernetes-style Status, so kubectl users recognise it."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if path is not None:
        body["details"] = {"causes": [{"field": path, "message": problem or message}]}
    return orjson.dumps(body)


async def respond(send: Send, status: int, body: bytes, *, allow: bytes | None = None) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if allow is not None:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AdmissionEndpoint:
    """POST handler for /mutate or /validate; `decide` is the pure rule for the endpoint."""

    def __init__(
        self, name: str, decide: Decide, *, max_body_bytes: int, metrics: WebhookMetrics
    ) -> None:
        self.name = name
        self._decide = decide
        self._limit = max_body_bytes
        self._admissions = metrics.admissions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        verdict = "error"
        patch_operations = 0
        try:
            status, body, verdict, patch_operations = await self._answer(scope, receive, started)
            await respond(send, status, body)
        except ClientGone:
            verdict = "client_gone"
        finally:
            seconds = time.perf_counter() - started
            self._admissions.observe(self.name, verdict, seconds, patch_operations)

    async def _answer(
        self, scope: Scope, receive: Receive, started: float
    ) -> tuple[int, bytes, str, int]:
        """Status, body, verdict and patch operations of the answer."""
        try:
            try:
                parsed = review.parse(await read_body(scope, receive, self._limit))
                result = self._decide(parsed)
            except BodyTooLarge:
                message = f"request body exceeds {self._limit} bytes"
                return 413, status_body(413, "RequestEntityTooLarge", message), "too_large", 0
            except BadInput as error:
                log.info(
                    "bad admission request", extra={"endpoint": self.name, "error": str(error)}
                )
                body = status_body(400, "BadRequest", str(error), error.path, error.problem)
                return 400, body, "bad_request", 0
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
            answer = orjson.dumps(review.render(parsed, result))
            return 200, answer, result.verdict, len(result.patch)
        except ClientGone:
            raise
        except Exception:
            log.exception("bug while answering an admission request", extra={"endpoint": self.name})
            message = "internal error in virtdev webhook; see its logs"
            return 500, status_body(500, "InternalError", message), "error", 0
