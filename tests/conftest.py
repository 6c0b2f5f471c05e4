"""Fixtures every test folder shares: the Kubernetes API stand-in and a real client of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.kube_standin import StandIn

if TYPE_CHECKING:  # the client is imported by the tests that ask for it, not by every session
    from kubernetes.client import ApiClient


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """The API stand-in, empty and serving; a test file that needs objects in it from the start
    overrides this with a fixture of the same name that asks for it and adds them."""
    with StandIn().running() as running:
        yield running


@pytest.fixture
def stand_in_client(stand_in: StandIn) -> Iterator[ApiClient]:
    """The real `kubernetes` client of the stand-in (plain HTTP, no credentials)."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = stand_in.url
    with client.ApiClient(configuration) as api_client:
        yield api_client
