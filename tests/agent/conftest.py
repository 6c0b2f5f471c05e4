"""Fixtures: a temporary device-plugin directory with a test kubelet, and a host root with
real character devices made by mknod (CI runs as root)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.agent.kubelet import TestKubelet

#: Major/minor numbers of the real nodes: misc devices 10:232 (kvm), 10:200 (tun), 10:238.
NODES = {"dev/kvm": (10, 232), "dev/net/tun": (10, 200), "dev/vhost-net": (10, 238)}


def make_node(root: Path, relative: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(*NODES[relative]))


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
