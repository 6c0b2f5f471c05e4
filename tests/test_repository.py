"""What the repository promises about itself: its licence, its entry points, its set-up."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_license_file_is_the_licence_pyproject_names() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text, "the full text, not a notice"


def test_virtdev_is_also_a_kubectl_plugin() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts["virtdev"] == scripts["kubectl-virtdev"] == "virtdev.cli:main"


def test_make_serve_installs_no_test_tools() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^serve: setup-serve$", makefile, re.M)
    assert re.search(r"^setup-serve:\n\t@scripts/setup.sh --serve$", makefile, re.M)
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    serve_branch = setup[setup.index('if [ "$mode" = --serve ]; then') :]
    serve_branch = serve_branch[: serve_branch.index("exit 0")]
    assert "install .\n" in serve_branch and "[test]" not in serve_branch
