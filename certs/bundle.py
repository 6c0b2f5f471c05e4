"""caBundle in rendered manifests: for clusters that keep their certificates themselves.

`virtdev certs ensure` patches caBundle into the live configurations; an admin who renders the
manifests with a fixed bundle instead (GitOps, no certificate Job) fills it here, with the same
rule: only webhooks whose clientConfig calls the webhook's Service are touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CONFIGURATION_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def calls_service(webhook: dict[str, Any], *, service: str, namespace: str) -> bool:
    """Whether a webhook entry's clientConfig names this Service."""
    target = (webhook.get("clientConfig") or {}).get("service") or {}
    return bool(target.get("name") == service and target.get("namespace") == namespace)


def fill_ca_bundle(
    documents: Iterable[Any], ca_bundle: str, *, service: str, namespace: str
) -> int:
    """Set caBundle on every webhook of the configurations that calls the Service, in place.

    Returns how many webhook entries now carry it.
    """
    filled = 0
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") not in CONFIGURATION_KINDS:
            continue
        for webhook in document.get("webhooks") or ():
            if calls_service(webhook, service=service, namespace=namespace):
                webhook["clientConfig"]["caBundle"] = ca_bundle
                filled += 1
    return filled
