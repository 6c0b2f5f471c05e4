"""Fixtures: a temporary device-plugin directory with a test kubelet, and a host root with
real character devices made by mknod (CI runs as root)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.agent.helpers import NODES, make_node
from tests.agent.kubelet import TestKubelet


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    # Unix socket paths are limited to 107 bytes: keep the directory short.
    path = tmp_path / "dp"
    path.mkdir()
    return path


@pytest.fixture
def host_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "host"
    for relative in NODES:
        make_node(root, relative)
    yield root


@pytest.fixture
async def kubelet(plugin_dir: Path) -> AsyncIterator[TestKubelet]:
    server = TestKubelet(str(plugin_dir))
    await server.start()
    yield server
    await server.stop()
