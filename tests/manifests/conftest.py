"""Render every kustomization once per test session; the tests read the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.manifests.tools import kustomizations, load_all, render

Objects = list[dict[str, Any]]


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    """kustomization (e.g. "overlays/openshift") -> the rendered YAML stream."""
    return {name: render(name) for name in kustomizations()}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, Objects]:
    """kustomization -> its rendered objects."""
    return {name: load_all(text) for name, text in rendered_text.items()}


@pytest.fixture(scope="session")
def rendered_files(
    rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """kustomization -> a file holding its rendered YAML (for tools that read files)."""
    directory = tmp_path_factory.mktemp("rendered")
    files: dict[str, Path] = {}
    for name, text in rendered_text.items():
        path = directory / (name.replace("/", "-") + ".yaml")
        path.write_text(text, encoding="utf-8")
        files[name] = path
    return files
