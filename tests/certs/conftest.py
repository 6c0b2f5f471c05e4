"""Shared pieces for the certificate tests: generated material (once per module) and helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certs.store import Material, ensure_material, service_dns_names

SERVICE, NAMESPACE = "virtdev-webhook", "virtdev"
DNS_NAMES = service_dns_names(SERVICE, NAMESPACE)
IP_ADDRESSES = ["127.0.0.1"]
VIRTDEV = [sys.executable, "-m", "virtdev.cli"]
REPO = Path(__file__).resolve().parents[2]

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def make_material(directory: Path, **kwargs: object) -> Material:
    options: dict[str, object] = {"dns_names": DNS_NAMES, "ip_addresses": IP_ADDRESSES}
    options.update(kwargs)
    return ensure_material(directory, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("material"))


def run(*argv: object, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command with a clean environment for OpenSSL and capture its text output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [str(arg) for arg in argv],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
