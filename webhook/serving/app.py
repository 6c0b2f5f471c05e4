"""The webhook's ASGI app: POST /mutate, /validate and /guard, plus FastAPI for the rest.

`create_app(settings)` wires the pure rules (with the live node view, when there is one) into
the three admission endpoints (`webhook.serving.endpoint`, plain ASGI for speed) and gives
FastAPI the lifespan (background tasks: certificate reload, node watch) and the OpenAPI description.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from virtdev import catalogue
from webhook.admission import Request, guard_review, mutate_review_decided, validate_review
from webhook.nodes.feasibility import NodeSnapshot
from webhook.options import (
    DEFAULT_ENFORCEMENT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_NO_KVM_POLICY,
    ENFORCEMENTS,
    NO_KVM_POLICIES,
    Enforcement,
    NoKvmPolicy,
)
from webhook.rules.answer import Answer
from webhook.rules.enforcement import enforce
from webhook.rules.policy import LauncherPolicy
from webhook.serving.endpoint import (
    AdmissionEndpoint,
    BodyBudget,
    Receive,
    Scope,
    Send,
    respond,
    status_body,
)
from webhook.serving.metrics import WebhookMetrics
from webhook.serving.openapi import admission_paths

log = logging.getLogger("virtdev.webhook")

#: A background job the app's lifespan runs and cancels (certificate reload, node watch).
BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class WebhookSettings:
    policy: LauncherPolicy = field(default_factory=LauncherPolicy)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: What /mutate does when no feasible node has kvm: warn, emulate or deny.
    no_kvm_policy: NoKvmPolicy = DEFAULT_NO_KVM_POLICY
    #: Bytes of large bodies (over 64 KiB) held at once across all requests
    #: (webhook.serving.endpoint).
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    #: What /validate does with a launcher pod the rules refuse: deny it, or warn and admit it.
    enforcement: Enforcement = DEFAULT_ENFORCEMENT

    def __post_init__(self) -> None:
        if self.no_kvm_policy not in NO_KVM_POLICIES:  # fail at start, not on every request
            raise ValueError(f"no-kvm policy {self.no_kvm_policy!r}: one of {NO_KVM_POLICIES}")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                f"max-buffered-bytes ({self.max_buffered_bytes}) must be at least "
                f"max-body-bytes ({self.max_body_bytes}), or no body at the limit could be read"
            )
        if self.enforcement not in ENFORCEMENTS:
            raise ValueError(f"enforcement {self.enforcement!r}: one of {ENFORCEMENTS}")


#: The current view of the nodes (None: no cluster configured); read once per request.
NodeSource = Callable[[], NodeSnapshot | None]


def create_app(
    settings: WebhookSettings | None = None,
    *,
    metrics: WebhookMetrics | None = None,
    background: Sequence[BackgroundTask] = (),
    nodes: NodeSource | None = None,
) -> AdmissionApp:
    settings = settings or WebhookSettings()
    metrics = metrics or WebhookMetrics.create()
    policy = settings.policy
    budget = BodyBudget(settings.max_buffered_bytes)
    # One thread decides the large bodies: the event loop answers small ones meanwhile, and no
    # two large bodies are parsed into objects at once (webhook.serving.endpoint).
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="virtdev-decide")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(job()) for job in background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            worker.shutdown(wait=False, cancel_futures=True)

    api = FastAPI(
        title="virtdev admission webhook",
        version="v1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    # The metric counts every unsynced decision; the log says so once per spell of it, not
    # once per pod (under load that would be thousands of identical lines).
    unsynced_spell = False

    def mutate_with_nodes(parsed: Request) -> Answer:
        nonlocal unsynced_spell
        snapshot = nodes() if nodes is not None else None
        result, decision = mutate_review_decided(
            parsed, policy, nodes=snapshot, no_kvm_policy=settings.no_kvm_policy
        )
        if decision is not None:
            metrics.scheduling_decisions.labels(decision.outcome).inc()
            if decision.outcome == "unsynced":
                if not unsynced_spell:
                    log.warning(
                        "node view not synced: launcher pods are patched as usual, without a "
                        "feasibility check, until it is",
                        extra={"pod": parsed.display_name, "uid": parsed.uid},
                    )
                unsynced_spell = True
            else:
                unsynced_spell = False
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
        return counted("mutate", result)

    enforcement = settings.enforcement

    def counted(name: str, answer: Answer) -> Answer:
        if answer.other_requester:
            metrics.untrusted_pods.labels(name).inc()
        for control in answer.controls:  # only on a denial (or a would-be one, under warn)
            metrics.denials.labels(name, answer.verdict, control, answer.profile).inc()
        return answer

    def validate(parsed: Request) -> Answer:
        return counted("validate", enforce(validate_review(parsed, policy), enforcement))

    def guard(parsed: Request) -> Answer:
        return counted("guard", enforce(guard_review(parsed, policy), enforcement))

    def endpoint(name: str, decide: Callable[[Request], Answer]) -> AdmissionEndpoint:
        return AdmissionEndpoint(
            name,
            decide,
            max_body_bytes=settings.max_body_bytes,
            metrics=metrics,
            budget=budget,
            worker=worker,
        )

    endpoints = {
        catalogue.MUTATE_PATH: endpoint("mutate", mutate_with_nodes),
        catalogue.VALIDATE_PATH: endpoint("validate", validate),
        catalogue.GUARD_PATH: endpoint("guard", guard),
    }
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    return AdmissionApp(api, endpoints)


def _openapi(api: FastAPI) -> dict[str, Any]:
    """FastAPI's description of the port, plus the three admission endpoints declared by hand."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, routes=api.routes)
        schema.setdefault("paths", {}).update(admission_paths())
        api.openapi_schema = schema
    return api.openapi_schema


class AdmissionApp:
    """The ASGI app on the HTTPS port: admission POSTs go straight to their endpoint.

    Everything else (the lifespan, /openapi.json, 404s) is FastAPI's.
    """

    def __init__(self, api: FastAPI, endpoints: dict[str, AdmissionEndpoint]) -> None:
        self.api = api
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                if scope["method"] == "POST":
                    return await endpoint(scope, receive, send)
                body = status_body(405, "MethodNotAllowed", "admission endpoints accept POST only")
                return await respond(send, 405, body, allow=b"POST")
        await self.api(scope, receive, send)
