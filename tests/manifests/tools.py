"""Find and run the external tools the manifest tests drive: kubectl, kubernetes-validate, checkov.

scripts/setup-tools.sh installs pinned versions into .venv-tools and .venv-checkov; CI runs it
through `make test`. A missing tool is a test failure that says how to install it, never a
skip: a skipped security check looks exactly like a passed one in a summary line.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"

#: (environment variable that overrides the path, the path setup-tools.sh installs to)
TOOLS: dict[str, tuple[str, Path]] = {
    "kubectl": ("KUBECTL", REPO / ".venv-tools" / "bin" / "kubectl"),
    "kubernetes-validate": (
        "KUBERNETES_VALIDATE",
        REPO / ".venv-tools" / "bin" / "kubernetes-validate",
    ),
    "checkov": ("CHECKOV", REPO / ".venv-checkov" / "bin" / "checkov"),
}


def tool(name: str) -> str:
    """The executable for a tool, or a failed test naming the command that installs it."""
    variable, default = TOOLS[name]
    override = os.environ.get(variable)
    path = Path(override) if override else default
    if not (path.is_file() and os.access(path, os.X_OK)):
        origin = f"${variable}" if override else "its pinned location"
        pytest.fail(
            f"{name} not found at {path} ({origin}): run scripts/setup-tools.sh "
            f"(part of `make setup`) to install it, or set {variable} to an executable",
            pytrace=False,
        )
    return str(path)


@dataclass(frozen=True)
class Completed:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.command)}\nexit status {self.returncode}\n"
            f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}"
        )


def run(command: list[str], *, timeout: float, cwd: Path | None = None) -> Completed:
    """Run a tool; a timeout fails the test with the command line, not a bare traceback."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out after {timeout:.0f} s: {' '.join(command)}", pytrace=False)
    return Completed(command, done.returncode, done.stdout, done.stderr)


def kustomizations() -> list[str]:
    """Every kustomization under manifests/, as a path relative to it (base first)."""
    found = sorted(
        str(path.parent.relative_to(MANIFESTS))
        for path in MANIFESTS.rglob("kustomization.yaml")
        if "components" not in path.parts
    )
    return sorted(found, key=lambda name: (name != "base", name))


def render(kustomization: str) -> str:
    """`kubectl kustomize` of one kustomization: the YAML stream that `kubectl apply -k` sends."""
    done = run([tool("kubectl"), "kustomize", str(MANIFESTS / kustomization)], timeout=120)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {kustomization} failed:\n{done.describe()}", pytrace=False)
    return done.stdout


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]
