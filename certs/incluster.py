"""Bootstrap and rotate the webhook's TLS material in the cluster: `virtdev certs ensure`.

One run reads the `kubernetes.io/tls` Secret (the manifests create it empty), lets
`certs.rotation.plan()` decide, then

1. patches `caBundle` of every webhook in the mutating and validating configurations that calls
   our Service, so the API servers trust every CA in the bundle *before* a certificate signed by
   a new CA can be served, and
2. writes the Secret (`tls.crt`, `tls.key`, `ca.crt` = the bundle, `ca.key`) with an update that
   carries the resourceVersion it read.

A 409 Conflict (someone else wrote in between) restarts the run from the reads. The calls are
exactly `get`/`update` on the Secret and `get`/`patch` on the two configurations, by name, which
is all the RBAC the Job needs. The configuration patch is a JSON Patch that also sets
`metadata.resourceVersion` to the value read: the API server then refuses it with 409 if the
list of webhooks changed meanwhile, so an index never points at the wrong webhook.

Run it as a Job after install and as a CronJob (daily is plenty), or in-process with
`--interval`. It is idempotent: when nothing is due, it writes nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from certs import rotation
from certs.bundle import calls_service

log = logging.getLogger(__name__)

SECRET_KEYS = {
    "ca_bundle": "ca.crt",
    "ca_key": "ca.key",
    "tls_cert": "tls.crt",
    "tls_key": "tls.key",
}
_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


class ClusterError(Exception):
    """The cluster is not as the manifests leave it (missing Secret or configuration)."""


@dataclass(frozen=True)
class Target:
    """What to keep in order: the Secret, the Service it serves, and the configurations."""

    namespace: str
    service: str
    secret: str
    mutating_configuration: str | None
    validating_configuration: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ()
    ca_days: int = 3650
    days: int = 365
    grace: timedelta = rotation.DEFAULT_GRACE


@dataclass(frozen=True)
class Outcome:
    changes: tuple[str, ...]
    attempts: int

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def ensure(api_client: Any, target: Target, *, now: datetime | None = None) -> Outcome:
    """Bring the Secret and the caBundles up to date; retries conflicts, raises anything else."""
    from kubernetes.client.exceptions import ApiException

    for attempt, pause in enumerate((*_BACKOFF, None), start=1):
        try:
            changes = _ensure_once(api_client, target, now or datetime.now(UTC))
            return Outcome(changes, attempt)
        except ApiException as error:
            if error.status != 409 or pause is None:
                raise
            log.info("conflict, reading again", extra={"attempt": attempt})
            time.sleep(pause)  # back off before competing again
    raise AssertionError("unreachable")


#: `virtdev certs ensure`'s own lines: what each run came to.
ensure_log = logging.getLogger("certs.ensure")


def keep(api_client: Any, target: Target, *, interval: float) -> int:
    """`virtdev certs ensure`: one `ensure`, or with `interval` > 0 one every `interval` seconds
    for ever. Returns the exit status of the last run: 0 done, 1 the cluster refused or could not
    be reached (the next run tries again), 2 a target that can never be met."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    while True:
        try:
            outcome = ensure(api_client, target)
            if not outcome.changed:
                ensure_log.info("nothing to do: the Secret and the caBundles are up to date")
            status = 0
        except ClusterError as error:
            ensure_log.error("%s", error)
            status = 1
        except ApiException as error:
            ensure_log.error("the API server refused: %s %s", error.status, error.reason)
            status = 1
        except (HTTPError, OSError) as error:
            ensure_log.error("cannot reach the API server: %s", error)
            status = 1
        except ValueError as error:
            ensure_log.error("%s", error)
            return 2
        if interval <= 0:
            return status
        time.sleep(interval)


def _ensure_once(api_client: Any, target: Target, now: datetime) -> tuple[str, ...]:
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(api_client)
    secret = _read(
        lambda: core.read_namespaced_secret(target.secret, target.namespace),
        f"Secret {target.namespace}/{target.secret}",
    )
    data: dict[str, str] = dict(secret.data or {})
    current = rotation.Stored(
        **{field: _decode(data.get(key)) for field, key in SECRET_KEYS.items()}
    )
    decided = rotation.plan(
        current,
        dns_names=target.dns_names,
        ip_addresses=target.ip_addresses,
        ca_days=target.ca_days,
        days=target.days,
        now=now,
        grace=target.grace,
    )
    ca_bundle = base64.b64encode(decided.stored.ca_bundle).decode()
    changes = list(decided.changes)
    for kind, name in (
        ("mutating", target.mutating_configuration),
        ("validating", target.validating_configuration),
    ):
        if name and _patch_ca_bundle(api_client, kind, name, ca_bundle, target):
            changes.append(f"set caBundle of {kind} webhook configuration {name}")
    if decided.changed:
        for field, key in SECRET_KEYS.items():
            data[key] = base64.b64encode(getattr(decided.stored, field)).decode()
        secret.data = data
        core.replace_namespaced_secret(target.secret, target.namespace, secret)
        changes.append(f"updated Secret {target.namespace}/{target.secret}")
    for change in changes:
        log.info("TLS material: %s", change)
    return tuple(changes)


def _patch_ca_bundle(api_client: Any, kind: str, name: str, ca_bundle: str, target: Target) -> bool:
    """Set caBundle on the configuration's webhooks that call our Service; True if it changed."""
    from kubernetes.client import AdmissionregistrationV1Api

    api = AdmissionregistrationV1Api(api_client)
    read, patch = (
        (api.read_mutating_webhook_configuration, api.patch_mutating_webhook_configuration)
        if kind == "mutating"
        else (api.read_validating_webhook_configuration, api.patch_validating_webhook_configuration)
    )
    response = _read(
        lambda: read(name, _preload_content=False), f"{kind} webhook configuration {name}"
    )
    configuration = json.loads(response.data)
    ours = [
        index
        for index, webhook in enumerate(configuration.get("webhooks") or [])
        if calls_service(webhook, service=target.service, namespace=target.namespace)
    ]
    if not ours:
        raise ClusterError(
            f"{kind} webhook configuration {name} has no webhook that calls Service "
            f"{target.namespace}/{target.service}"
        )
    webhooks = configuration["webhooks"]
    stale = [i for i in ours if webhooks[i]["clientConfig"].get("caBundle") != ca_bundle]
    if not stale:
        return False
    operations: list[dict[str, Any]] = [
        {
            "op": "replace",
            "path": "/metadata/resourceVersion",
            "value": configuration["metadata"]["resourceVersion"],
        }
    ]
    operations += [
        {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca_bundle}
        for i in stale
    ]
    patch(name, operations, _content_type="application/json-patch+json", _preload_content=False)
    return True


def _read(call: Any, what: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return call()
    except ApiException as error:
        if error.status == 404:
            raise ClusterError(f"{what} not found: apply the manifests first") from None
        raise


def _decode(value: str | None) -> bytes:
    if not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""
