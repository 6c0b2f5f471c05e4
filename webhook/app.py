"""The HTTP face of the webhook: POST /mutate and POST /validate, nothing else on this port.

Hot path: read the raw body once (bounded), parse it with orjson, run the pure rules, answer
with plain bytes. No per-request model validation: `review.parse` checks exactly what is read.
Errors are told apart on purpose: 400 names the JSON path of bad input, 413 a body over the
limit, and a bug is a 500 (logged with its traceback) — never disguised as bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from virtdev import catalogue
from webhook import review
from webhook.admission import mutate_review_decided, validate_review
from webhook.feasibility import DEFAULT_NO_KVM_POLICY, NO_KVM_POLICIES, NodeSnapshot
from webhook.metrics import WebhookMetrics
from webhook.openapi import endpoint_spec
from webhook.policy import LauncherPolicy
from webhook.schema import BadInput

log = logging.getLogger("virtdev.webhook")

DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
JSON = "application/json"

#: A background job the app's lifespan runs and cancels (certificate reload, node watch).
BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class WebhookSettings:
    policy: LauncherPolicy = field(default_factory=LauncherPolicy)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: What /mutate does when no feasible node has kvm: warn, emulate or deny.
    no_kvm_policy: str = DEFAULT_NO_KVM_POLICY

    def __post_init__(self) -> None:
        if self.no_kvm_policy not in NO_KVM_POLICIES:  # fail at start, not on every request
            raise ValueError(f"no-kvm policy {self.no_kvm_policy!r}: one of {NO_KVM_POLICIES}")


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early (by Content-Length) or as soon as the limit is passed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(
    code: int, reason: str, message: str, path: str | None = None, problem: str = ""
) -> Response:
    """A Kubernetes-style Status body, so kubectl users recognise it."""
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
    return Response(orjson.dumps(body), status_code=code, media_type=JSON)


Decide = Callable[[review.Request], review.Answer]
#: The current view of the nodes (None: no cluster configured); read once per request.
NodeSource = Callable[[], NodeSnapshot | None]


def create_app(
    settings: WebhookSettings | None = None,
    *,
    metrics: WebhookMetrics | None = None,
    background: Sequence[BackgroundTask] = (),
    nodes: NodeSource | None = None,
) -> FastAPI:
    settings = settings or WebhookSettings()
    metrics = metrics or WebhookMetrics.create()
    policy = settings.policy

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(job()) for job in background]
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="virtdev admission webhook",
        version="v1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ready = False
    app.state.metrics = metrics

    async def answer(request: Request, endpoint: str, decide: Decide) -> Response:
        started = time.perf_counter()
        verdict = "error"
        try:
            try:
                body = await read_body(request, settings.max_body_bytes)
                parsed = review.parse(body)
                result = decide(parsed)
            except BodyTooLarge:
                verdict = "too_large"
                limit = settings.max_body_bytes
                return _error(413, "RequestEntityTooLarge", f"request body exceeds {limit} bytes")
            except BadInput as error:
                verdict = "bad_request"
                log.info("bad admission request", extra={"endpoint": endpoint, "error": str(error)})
                return _error(400, "BadRequest", str(error), error.path, error.problem)
            verdict = result.verdict
            if result.patch:
                metrics.patch_operations.inc(len(result.patch))
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            log.log(
                logging.DEBUG if verdict == "skipped" else logging.INFO,
                "admission %s",
                verdict,
                extra={
                    "endpoint": endpoint,
                    "uid": parsed.uid,
                    "pod": parsed.display_name,
                    "operation": parsed.operation,
                    "verdict": verdict,
                    "patch_ops": len(result.patch),
                    "duration_ms": elapsed_ms,
                },
            )
            return Response(orjson.dumps(review.render(parsed, result)), media_type=JSON)
        except Exception:
            log.exception("bug while answering an admission request", extra={"endpoint": endpoint})
            return _error(500, "InternalError", "internal error in virtdev webhook; see its logs")
        finally:
            metrics.requests.labels(endpoint, verdict).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    @app.post(
        catalogue.MUTATE_PATH,
        summary="Mutating admission: make launcher pods request devices",
        openapi_extra=endpoint_spec(),
    )
    async def mutate_endpoint(request: Request) -> Response:
        return await answer(request, "mutate", mutate_with_nodes)

    def mutate_with_nodes(parsed: review.Request) -> review.Answer:
        snapshot = nodes() if nodes is not None else None
        result, decision = mutate_review_decided(
            parsed, policy, nodes=snapshot, no_kvm_policy=settings.no_kvm_policy
        )
        if decision is not None:
            metrics.scheduling_decisions.labels(decision.outcome).inc()
            if decision.outcome == "unsynced":
                log.warning(
                    "node view not synced: launcher pod patched as usual, without a feasibility "
                    "check",
                    extra={"pod": parsed.display_name, "uid": parsed.uid},
                )
            else:
                metrics.feasible_nodes.set(decision.feasible)
            if decision.outcome not in ("feasible", "unsynced"):
                log.info(
                    "no feasible node: %s",
                    decision.outcome,
                    extra={
                        "pod": parsed.display_name,
                        "uid": parsed.uid,
                        "ruled_out": dict(decision.ruled_out),
                    },
                )
        return result

    @app.post(
        catalogue.VALIDATE_PATH,
        summary="Validating admission: refuse privileged launchers",
        openapi_extra=endpoint_spec(),
    )
    async def validate_endpoint(request: Request) -> Response:
        return await answer(request, "validate", lambda parsed: validate_review(parsed, policy))

    return app
