"""The static-certs variant: manifests rendered with a caBundle by `virtdev certs ca-bundle`."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from certs.store import ensure_material, service_dns_names
from tests.manifests.k8s import find
from tests.manifests.tools import load_all
from virtdev import catalogue

Objects = list[dict[str, Any]]
CONFIGURATIONS = {
    "MutatingWebhookConfiguration": catalogue.MUTATING_CONFIGURATION,
    "ValidatingWebhookConfiguration": catalogue.VALIDATING_CONFIGURATION,
}


def fill(directory: Path, rendered: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "virtdev.cli", "certs", "ca-bundle", str(directory), "--fill", "-"]
        + list(extra),
        input=rendered,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_static_certs_renders_without_bootstrap_and_with_a_filled_ca_bundle(
    rendered_text: dict[str, str], rendered: dict[str, Objects], tmp_path: Path
) -> None:
    objects = rendered["overlays/static-certs"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert not {k for k in kinds if k[1] == "virtdev-certs" or k[0] in ("Job", "CronJob")}
    names = service_dns_names(catalogue.WEBHOOK_SERVICE, catalogue.NAMESPACE)
    material = ensure_material(tmp_path, dns_names=names)
    expected = base64.b64encode(material.ca_cert.read_bytes()).decode()

    result = fill(tmp_path, rendered_text["overlays/static-certs"])

    assert result.returncode == 0, result.stderr
    filled = load_all(result.stdout)
    assert len(filled) == len(objects), "every object is printed, none added or lost"
    for kind, name in CONFIGURATIONS.items():
        configuration = find(filled, kind, name)
        bundles = {w["clientConfig"].get("caBundle") for w in configuration["webhooks"]}
        assert bundles == {expected}, kind
        unfilled = find(objects, kind, name)
        for webhook in unfilled["webhooks"]:
            assert "caBundle" not in webhook["clientConfig"], "the overlay itself carries none"


def test_fill_refuses_manifests_without_the_service(
    rendered_text: dict[str, str], tmp_path: Path
) -> None:
    ensure_material(tmp_path, dns_names=["localhost"])
    result = fill(tmp_path, rendered_text["base"], "--service", "elsewhere")
    assert result.returncode == 1
    assert "no webhook calls Service virtdev/elsewhere" in result.stderr
    assert result.stdout == ""
