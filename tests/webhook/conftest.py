"""Shared helpers for the webhook tests: the fixture reviews and free local ports."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import orjson
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: KubeVirt's renders, one YAML file per release and feature (`path@tag:lines` in each).
RENDERS = FIXTURES / "kubevirt"
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


@pytest.fixture(params=FIXTURE_NAMES)
def fixture_name(request: pytest.FixtureRequest) -> str:
    """Each fixture file name in turn."""
    return str(request.param)
