"""`kubectl kustomize` renders the base and every overlay."""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.tools import kustomizations, render

#: The overlays users are told about in docs/install.md.
DOCUMENTED = {
    "overlays/cert-manager",
    "overlays/k0s",
    "overlays/microk8s",
    "overlays/openshift",
    "overlays/emulation",
    "overlays/static-certs",
    "overlays/policy-reports",
    "overlays/prometheus",
}


def test_every_documented_overlay_exists() -> None:
    missing = DOCUMENTED - set(kustomizations())
    assert not missing, f"overlays named in docs/install.md but missing: {sorted(missing)}"


@pytest.mark.parametrize("kustomization", kustomizations())
def test_kustomization_renders_objects(kustomization: str) -> None:
    text = render(kustomization)
    assert "kind:" in text, f"{kustomization} rendered nothing"


def test_overlays_do_not_drop_the_webhook_or_the_agent(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for name, objects in rendered.items():
        if not name.startswith("overlays/"):
            continue
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for expected in (
            ("Deployment", "virtdev-webhook"),
            ("DaemonSet", "virtdev-agent"),
            ("MutatingWebhookConfiguration", "virtdev"),
            ("ValidatingWebhookConfiguration", "virtdev"),
        ):
            assert expected in kinds, f"{name} lost {expected[0]}/{expected[1]}"
