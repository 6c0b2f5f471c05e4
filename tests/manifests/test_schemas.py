"""kubernetes-validate --strict accepts every rendered object.

Against two Kubernetes versions: the oldest these manifests support (docs/install.md) and the
newest kubernetes-validate knows, so a field too new for old clusters or dropped by new ones
fails here. kubernetes-validate only warns, exit status 0, about kinds it has no schema for;
such a warning fails here too, except for the custom kinds in custom_kinds.py, which are
checked against their projects' published fields instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.manifests.custom_kinds import CUSTOM_KINDS, check, enum_problems
from tests.manifests.k8s import ref
from tests.manifests.tools import kustomizations, run, tool

OLDEST_SUPPORTED = "1.30.0"
NEWEST = "1.37.0"

_NO_SCHEMA = re.compile(
    r"^WARN .* Couldn't find schema for kind (?P<kind>\S+) with api version (?P<api>\S+)"
)


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, NEWEST])
@pytest.mark.parametrize("kustomization", kustomizations())
def test_kubernetes_validate_strict_accepts_every_object(
    kustomization: str, version: str, rendered_files: dict[str, Path]
) -> None:
    done = run(
        [
            tool("kubernetes-validate"),
            "--strict",
            "--quiet",
            "--kubernetes-version",
            version,
            str(rendered_files[kustomization]),
        ],
        timeout=300,
    )
    assert done.returncode == 0, f"kubernetes-validate rejected {kustomization}:\n{done.describe()}"
    problems = []
    for line in (done.stdout + done.stderr).splitlines():
        if not line.strip():
            continue
        match = _NO_SCHEMA.match(line)
        if match and (match["api"], match["kind"]) in CUSTOM_KINDS:
            continue  # checked by test_custom_kinds_match_their_published_fields
        problems.append(line)
    assert not problems, f"kubernetes-validate on {kustomization} said:\n" + "\n".join(problems)


@pytest.mark.parametrize("kustomization", kustomizations())
def test_custom_kinds_match_their_published_fields(
    kustomization: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    problems = []
    for obj in rendered[kustomization]:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if key not in CUSTOM_KINDS:
            continue
        found = check(obj, CUSTOM_KINDS[key])
        if key[1] == "Certificate":
            found += enum_problems(obj)
        problems += [f"{ref(obj)} {problem}" for problem in found]
    assert not problems, "\n".join(problems)


def test_the_field_checker_rejects_unknown_fields_and_wrong_types() -> None:
    certificate = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "x"},
        "spec": {"secretName": "s", "issuerRef": {"name": "i"}, "dnsName": ["typo"], "isCA": 1},
    }
    problems = check(certificate, CUSTOM_KINDS[("cert-manager.io/v1", "Certificate")])
    assert any(p.startswith(".spec.dnsName: unknown field") for p in problems), problems
    assert ".spec.isCA: expected bool, got int" in problems, problems
    scc = {"apiVersion": "security.openshift.io/v1", "kind": "SecurityContextConstraints"}
    problems = check(scc, CUSTOM_KINDS[("security.openshift.io/v1", "SecurityContextConstraints")])
    assert ".allowPrivilegedContainer: required" in problems, problems
