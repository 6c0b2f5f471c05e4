"""Shared helpers for the webhook tests: the fixture reviews and free local ports."""

from __future__ import annotations

import copy
import functools
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_NAMES = tuple(sorted(path.name for path in FIXTURES.glob("*.json")))


@functools.cache
def _read_fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_bytes(name: str) -> bytes:
    """The raw body of a fixture AdmissionReview, exactly as stored."""
    return _read_fixture(name)


def load_fixture(name: str) -> dict[str, Any]:
    """A fresh copy of a fixture AdmissionReview (callers may change it)."""
    document: dict[str, Any] = orjson.loads(_read_fixture(name))
    return copy.deepcopy(document)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago: bind port 0, read it, release it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct free ports: all sockets are held until every port is chosen."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(params=FIXTURE_NAMES)
def fixture_name(request: pytest.FixtureRequest) -> str:
    """Each fixture file name in turn."""
    return str(request.param)
