"""The test kubelet itself: it must refuse what a real kubelet refuses, or the agent's tests
would prove nothing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent.health import HealthState
from agent.metrics import AgentMetrics
from agent.servicer import DevicePluginServicer, add_to_server
from agent.v1beta1 import api_pb2 as api
from agent.v1beta1.api_pb2_grpc import RegistrationStub
from tests.agent.kubelet import TestKubelet
from virtdev import catalogue

KVM = catalogue.DEVICES["kvm"]


@contextlib.asynccontextmanager
async def serving(plugin_dir: Path, *, permissions: str = "rw") -> AsyncIterator[str]:
    """A device plugin serving on `plugin.sock`, without the agent's lifecycle around it."""
    servicer = DevicePluginServicer(
        device=KVM,
        ids=("kvm-000", "kvm-001"),
        permissions=permissions,
        health=HealthState(),
        metrics=AgentMetrics(),
    )
    server = grpc.aio.server()
    add_to_server(servicer, server)
    server.add_insecure_port(f"unix:{plugin_dir / 'plugin.sock'}")
    await server.start()
    try:
        yield "plugin.sock"
    finally:
        servicer.close()
        await server.stop(0.5)


@pytest.fixture
async def plugin_server(plugin_dir: Path) -> AsyncIterator[str]:
    async with serving(plugin_dir) as name:
        yield name


async def register(kubelet: TestKubelet, **fields: str) -> None:
    request = api.RegisterRequest(
        version=fields.get("version", "v1beta1"),
        endpoint=fields.get("endpoint", "plugin.sock"),
        resource_name=fields.get("resource_name", KVM.resource),
    )
    async with grpc.aio.insecure_channel(f"unix:{kubelet.socket}") as channel:
        await RegistrationStub(channel).Register(request, timeout=30)


async def test_a_plugin_that_serves_first_is_registered_and_watched(
    kubelet: TestKubelet, plugin_server: str
) -> None:
    await register(kubelet)
    endpoint = await kubelet.wait_registered(KVM.resource)
    assert endpoint.options.get_preferred_allocation_available
    devices = await kubelet.wait_for_devices(KVM.resource, lambda d: len(d) == 2)
    assert devices == [("kvm-000", "Unhealthy"), ("kvm-001", "Unhealthy")]
    assert kubelet.violations == []


@pytest.mark.parametrize(
    ("permissions", "violation"),
    [("rwm", False), ("rw", False), ("rwx", True), ("", True), ("rrw", True)],
)
async def test_device_permissions_the_runtime_would_refuse_are_violations(
    kubelet: TestKubelet, plugin_dir: Path, permissions: str, violation: bool
) -> None:
    async with serving(plugin_dir, permissions=permissions):
        await register(kubelet)
        await kubelet.wait_registered(KVM.resource)
        await kubelet.allocate(KVM.resource, [["kvm-001"]])
    expected = [f"{KVM.resource}: bad device permissions {permissions!r}"] if violation else []
    assert kubelet.violations == expected


async def test_a_wrong_version_is_refused(kubelet: TestKubelet, plugin_server: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError, match="version 'v1alpha' is not supported"):
        await register(kubelet, version="v1alpha")
    assert kubelet.registrations == []


@pytest.mark.parametrize(
    "name", ["kubernetes.io/kvm", "kvm", "sub.kubernetes.io/kvm", "Bad_Domain/kvm", "a/"]
)
async def test_a_resource_name_that_is_not_extended_is_refused(
    kubelet: TestKubelet, plugin_server: str, name: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError, match="invalid extended resource name"):
        await register(kubelet, resource_name=name)
    assert kubelet.registrations == []


@pytest.mark.parametrize("endpoint", ["", "/abs/plugin.sock", "sub/plugin.sock"])
async def test_an_endpoint_that_is_not_a_bare_file_name_is_refused(
    kubelet: TestKubelet, plugin_server: str, endpoint: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError, match="bare socket file name"):
        await register(kubelet, endpoint=endpoint)


async def test_a_plugin_that_registers_before_serving_is_refused(plugin_dir: Path) -> None:
    kubelet = TestKubelet(str(plugin_dir), dial_timeout=1.0)
    await kubelet.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError, match="failed to dial device plugin"):
            await register(kubelet, endpoint="not-yet-serving.sock")
        assert kubelet.registrations == []
    finally:
        await kubelet.stop()


async def test_restart_deletes_every_socket_but_keeps_the_checkpoint(
    kubelet: TestKubelet, plugin_server: str, plugin_dir: Path
) -> None:
    (plugin_dir / "kubelet_internal_checkpoint").write_text("{}")
    await register(kubelet)
    await kubelet.wait_registered(KVM.resource)
    await kubelet.restart()
    assert sorted(os.listdir(plugin_dir)) == ["kubelet.sock", "kubelet_internal_checkpoint"]
    assert kubelet.endpoints == {}
    kubelet.dial_timeout = 1.0
    with pytest.raises(grpc.aio.AioRpcError, match="failed to dial device plugin"):
        await register(kubelet)  # the new kubelet serves, but the plugin's socket is gone
