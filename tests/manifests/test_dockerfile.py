"""What can be checked of the Dockerfile without a container engine (none on these machines).

checkov's Dockerfile rules run in test_checkov.py. Here: the base is pinned by digest, the
final stage holds only the virtualenv and runs as a numeric non-root user, the OCI labels are
there, and the build step works: the files the Dockerfile copies, as .dockerignore lets them
through, build a wheel the way the Dockerfile's `pip install .` does (build isolation, with
pyproject.toml's build requirements from PyPI) that holds every package, the generated
protobuf files, the .proto and the entry point.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import virtdev
from tests.manifests.tools import REPO

Instruction = tuple[str, str]
DIGEST_PINNED = re.compile(r"^\S+:[\w.-]+@sha256:[0-9a-f]{64}$")


def _instructions(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    """The Dockerfile's stages, each starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in _instructions((REPO / "Dockerfile").read_text(encoding="utf-8")):
        if instruction[0] == "FROM":
            result.append([])
        assert result, "the Dockerfile must start with FROM (after ARGs of none)"
        result[-1].append(instruction)
    return result


def test_multi_stage_with_one_digest_pinned_base(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2, "expected a build stage and a final stage"
    bases = {stage[0][1].split()[0] for stage in stages}
    assert len(bases) == 1, (
        f"the virtualenv only works on the interpreter it was built for: {bases}"
    )
    (base,) = bases
    assert DIGEST_PINNED.match(base), f"base not pinned by version tag and digest: {base}"


def test_final_stage_is_only_the_virtualenv_and_runs_unprivileged(
    stages: list[list[Instruction]],
) -> None:
    final = stages[-1]
    keywords = [keyword for keyword, _ in final]
    assert "RUN" not in keywords, "the final stage must not run anything (no compilers, caches)"
    copies = [arguments for keyword, arguments in final if keyword == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), copies
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root uid: {users[-1]}"
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    entrypoints = [arguments for keyword, arguments in final if keyword == "ENTRYPOINT"]
    assert entrypoints == ['["virtdev"]'], entrypoints
    environment = " ".join(arguments for keyword, arguments in final if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in environment, environment


def test_oci_labels_and_version(stages: list[list[Instruction]]) -> None:
    final = stages[-1]
    labels = " ".join(arguments for keyword, arguments in final if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, f"missing OCI label {key}"
    args = dict(
        arguments.split("=", 1)
        for keyword, arguments in final
        if keyword == "ARG" and "=" in arguments
    )
    assert args.get("VERSION") == virtdev.__version__, "Dockerfile VERSION != virtdev.__version__"


def _copied_sources(stages: list[list[Instruction]]) -> list[str]:
    sources = []
    for keyword, arguments in stages[0]:
        if keyword == "COPY" and not arguments.startswith("--from"):
            *parts, _destination = arguments.split()
            sources += [p.rstrip("/") for p in parts]
    return sources


def test_the_build_copies_every_package_and_dockerignore_lets_them_through(
    stages: list[list[Instruction]],
) -> None:
    sources = _copied_sources(stages)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    assert packages <= set(sources), (
        f"packages not copied into the image: {packages - set(sources)}"
    )
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", ".dockerignore must start by excluding everything"
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f".dockerignore excludes {source}"


def test_the_copied_files_build_a_complete_wheel(
    stages: list[list[Instruction]], tmp_path: Path
) -> None:
    context = tmp_path / "context"
    for source in _copied_sources(stages):
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(
                origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(origin, context / source)
    wheels = tmp_path / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "-w", str(wheels), str(context)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"building the wheel failed:\n{done.stdout}\n{done.stderr}"
    (wheel,) = wheels.glob("virtdev-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("virtdev", "webhook", "agent", "certs"):
        expected = {
            path.relative_to(REPO).as_posix()
            for path in (REPO / package).rglob("*")
            if path.suffix in (".py", ".pyi", ".proto") or path.name == "py.typed"
            if "__pycache__" not in path.parts
        }
        missing = expected - names
        assert not missing, f"the image would lack: {sorted(missing)}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "virtdev = virtdev.cli:main" in text, text
