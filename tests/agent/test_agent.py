"""The agent against the test kubelet, over real gRPC on real unix sockets, with real
character devices under a temporary host root."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import grpc
import httpx
import pytest

import virtdev
from agent import cgroups
from agent.app import Agent
from agent.v1beta1 import api_pb2 as api
from tests.agent.helpers import KVM, SERVED, TUN, VHOST_NET, all_have, make_node, running_agent
from tests.agent.kubelet import WAIT, TestKubelet
from virtdev import catalogue


async def get(agent: Agent, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.probes.port}") as client:
        return await client.get(path)


def metric(agent: Agent, name: str, resource: str) -> float:
    value = agent.metrics.registry.get_sample_value(name, {"resource": resource})
    assert value is not None, name
    return value


async def test_every_resource_virt_handler_serves_is_registered_as_the_kubelet_expects(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    assert [device.name for device in SERVED] == ["kvm", "tun", "vhost-net"]
    async with running_agent(plugin_dir, host_root) as agent:
        for device in SERVED:
            endpoint = await kubelet.wait_registered(device.resource)
            assert endpoint.request.version == "v1beta1"
            assert endpoint.request.endpoint == catalogue.plugin_socket(device.name)
            assert endpoint.request.options.get_preferred_allocation_available
            assert not endpoint.request.options.pre_start_required
            assert endpoint.options == endpoint.request.options
        await agent.wait_until(lambda: agent.readiness()[0], timeout=WAIT)
        response = await get(agent, "/readyz")
        assert response.status_code == 200
        assert "devices.kubevirt.io/kvm: registered" in response.text
        assert metric(agent, "virtdev_agent_registrations_total", KVM.resource) == 1
    assert kubelet.refusals == []


async def test_the_device_lists_carry_count_stable_ids_all_healthy(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root, device_count=7):
        kvm = await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
        tun = await kubelet.wait_for_devices(TUN.resource, all_have("Healthy"))
    assert [i for i, _ in kvm] == [f"kvm-{n:03d}" for n in range(7)]
    assert [i for i, _ in tun] == [f"tun-{n:03d}" for n in range(7)]
    assert kubelet.violations == []


async def test_the_default_count_is_virt_handlers_max_devices(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    """1000, not the kubelet's default pod limit of 110: a kubelet with a higher `maxPods`
    would otherwise leave launcher pods Pending with devices to spare."""
    async with running_agent(plugin_dir, host_root):
        for device in SERVED:
            devices = await kubelet.wait_for_devices(device.resource, all_have("Healthy"))
            assert len(devices) == catalogue.DEFAULT_DEVICE_COUNT == 1000
            assert devices[-1][0] == f"{device.name}-999"
        responses = await kubelet.allocate(KVM.resource, [["kvm-999"]])
    assert responses[0].devices[0].host_path == "/dev/kvm"
    assert kubelet.violations == []


@pytest.mark.parametrize("permissions", ["rw", "rwm"])
async def test_allocate_gives_each_container_the_node_with_the_permissions_set(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet, permissions: str
) -> None:
    async with running_agent(plugin_dir, host_root, device_permissions=permissions) as agent:
        await kubelet.wait_registered(TUN.resource)
        responses = await kubelet.allocate(TUN.resource, [["tun-000"], ["tun-001", "tun-002"]])
        for response in responses:
            assert [(d.host_path, d.container_path, d.permissions) for d in response.devices] == [
                ("/dev/net/tun", "/dev/net/tun", permissions)
            ]
            assert not response.mounts and not response.envs
        assert metric(agent, "virtdev_agent_allocations_total", TUN.resource) == 2


async def test_by_default_the_permissions_follow_this_nodes_cgroup_version(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    mounted = cgroups.filesystem_at(Path(cgroups.MOUNTINFO).read_text())
    expected = "rwm" if mounted == "cgroup2" else "rw"
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_registered(KVM.resource)
        responses = await kubelet.allocate(KVM.resource, [["kvm-000"]])
    assert agent.permissions == expected
    assert [d.permissions for d in responses[0].devices] == [expected]


async def test_allocate_answers_several_containers_in_one_request(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root):
        endpoint = await kubelet.wait_registered(KVM.resource)
        request = api.AllocateRequest(
            container_requests=[
                api.ContainerAllocateRequest(devices_ids=["kvm-003"]),
                api.ContainerAllocateRequest(devices_ids=["kvm-004"]),
                api.ContainerAllocateRequest(devices_ids=["kvm-005"]),
            ]
        )
        response = await endpoint.stub.Allocate(request, timeout=30)
    assert len(response.container_responses) == 3
    assert all(r.devices[0].host_path == "/dev/kvm" for r in response.container_responses)


async def test_allocate_refuses_unknown_ids_naming_them(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_registered(KVM.resource)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await kubelet.allocate(KVM.resource, [["kvm-000", "kvm-1000", "gpu-0"]])
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "gpu-0, kvm-1000" in (raised.value.details() or "")
        assert metric(agent, "virtdev_agent_allocation_errors_total", KVM.resource) == 1
        assert metric(agent, "virtdev_agent_allocations_total", KVM.resource) == 0


async def test_preferred_allocation_honours_must_include_and_size(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root):
        endpoint = await kubelet.wait_registered(KVM.resource)
        request = api.PreferredAllocationRequest(
            container_requests=[
                api.ContainerPreferredAllocationRequest(
                    available_deviceIDs=["kvm-009", "kvm-002", "kvm-005", "kvm-007"],
                    must_include_deviceIDs=["kvm-007"],
                    allocation_size=3,
                ),
                api.ContainerPreferredAllocationRequest(
                    available_deviceIDs=["kvm-001", "kvm-000"], allocation_size=1
                ),
            ]
        )
        response = await endpoint.stub.GetPreferredAllocation(request, timeout=30)
        chosen = [list(r.deviceIDs) for r in response.container_responses]
        assert chosen == [["kvm-007", "kvm-002", "kvm-005"], ["kvm-000"]]
        pre_start = await endpoint.stub.PreStartContainer(
            api.PreStartContainerRequest(devices_ids=["kvm-000"]), timeout=30
        )
        assert pre_start == api.PreStartContainerResponse()


async def test_a_node_that_vanishes_and_comes_back_changes_the_health(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
        # Each resource registers and lists on its own: wait for tun's first list too.
        await kubelet.wait_for_devices(TUN.resource, all_have("Healthy"))
        (host_root / "dev/kvm").unlink()
        await kubelet.wait_for_devices(KVM.resource, all_have("Unhealthy"))
        assert metric(agent, "virtdev_agent_device_healthy", KVM.resource) == 0
        make_node(host_root, "dev/kvm")
        await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
        assert metric(agent, "virtdev_agent_device_healthy", KVM.resource) == 1
        # A plain file where the node was is no device.
        (host_root / "dev/kvm").unlink()
        (host_root / "dev/kvm").write_text("")
        await kubelet.wait_for_devices(KVM.resource, all_have("Unhealthy"))
        tun = kubelet.endpoints[TUN.resource].lists[-1]
        assert all(health == "Healthy" for _, health in tun)


async def test_tun_survives_its_directory_vanishing_and_coming_back(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root):
        await kubelet.wait_for_devices(TUN.resource, all_have("Healthy"))
        (host_root / "dev/net/tun").unlink()
        (host_root / "dev/net").rmdir()
        await kubelet.wait_for_devices(TUN.resource, all_have("Unhealthy"))
        make_node(host_root, "dev/net/tun")  # creates dev/net, then the node
        await kubelet.wait_for_devices(TUN.resource, all_have("Healthy"))


async def test_a_missing_node_at_start_is_advertised_unhealthy(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    (host_root / "dev/kvm").unlink()
    async with running_agent(plugin_dir, host_root):
        await kubelet.wait_for_devices(KVM.resource, all_have("Unhealthy"))
        make_node(host_root, "dev/kvm")
        await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))


async def test_kubelet_restarts_are_survived_again_and_again(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root) as agent:
        for restart in range(1, 6):
            for device in SERVED:
                await kubelet.wait_registered(device.resource, count=restart)
            await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
            await kubelet.restart()
        for device in SERVED:
            await kubelet.wait_registered(device.resource, count=6)
            await kubelet.wait_for_devices(device.resource, all_have("Healthy"))
        await agent.wait_until(lambda: agent.readiness()[0], timeout=WAIT)
        assert metric(agent, "virtdev_agent_reregistrations_total", KVM.resource) == 5
        # Every stream of the old kubelets noticed its end; only the new one is open.
        assert metric(agent, "virtdev_agent_list_and_watch_streams", TUN.resource) == 1
        assert metric(agent, "virtdev_agent_plugin_restarts_total", KVM.resource) == 0
    assert kubelet.refusals == [] and kubelet.violations == []
    # The agent removed its sockets on the way out.
    assert sorted(os.listdir(plugin_dir)) == ["kubelet.sock"]


async def test_refused_registrations_are_retried_with_backoff_until_accepted(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    """Each refusal costs one try (restart counter) and a backoff step (1 s, then 2 s); the
    agent never gives up. The exact delays are the benchmark's business, not this test's."""
    kubelet.refuse_registrations[KVM.resource] = 2
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_registered(TUN.resource)
        if KVM.resource not in kubelet.endpoints:  # still backing off: not every resource is in
            assert not agent.readiness()[0]
        await kubelet.wait_registered(KVM.resource, timeout=WAIT + 3)
        await agent.wait_until(lambda: agent.readiness()[0], timeout=WAIT)
        assert metric(agent, "virtdev_agent_plugin_restarts_total", KVM.resource) == 2
        assert metric(agent, "virtdev_agent_plugin_restarts_total", TUN.resource) == 0
        assert metric(agent, "virtdev_agent_registrations_total", KVM.resource) == 1
    assert kubelet.refusals == [f"{KVM.resource}: kubelet busy, try again"] * 2


async def test_the_agent_waits_for_an_absent_kubelet(plugin_dir: Path, host_root: Path) -> None:
    kubelet = TestKubelet(str(plugin_dir))
    async with running_agent(plugin_dir, host_root) as agent:
        response = await get(agent, "/readyz")
        assert response.status_code == 503
        assert "waiting for the kubelet" in response.text or "starting" in response.text
        await kubelet.start()
        try:
            await kubelet.wait_registered(KVM.resource)
            await kubelet.wait_registered(TUN.resource)
            await agent.wait_until(lambda: agent.readiness()[0], timeout=WAIT)
        finally:
            await kubelet.stop()
    assert kubelet.refusals == []


async def test_a_stale_socket_is_replaced(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    stale = plugin_dir / catalogue.plugin_socket("kvm")
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(stale))  # bound, never listening: connecting is refused
    leftover.close()
    async with running_agent(plugin_dir, host_root):
        await kubelet.wait_registered(KVM.resource)
        await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))


async def test_a_live_socket_is_never_replaced(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    path = plugin_dir / catalogue.plugin_socket("kvm")
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    other.listen()
    inode = path.stat().st_ino
    try:
        async with running_agent(plugin_dir, host_root) as agent:
            await kubelet.wait_registered(TUN.resource)
            await agent.wait_until(
                lambda: metric(agent, "virtdev_agent_plugin_restarts_total", KVM.resource) >= 1,
                timeout=WAIT,
            )
            ready, reason = agent.readiness()
            assert not ready and "served by another live process" in reason
            assert path.stat().st_ino == inode
            assert KVM.resource not in kubelet.endpoints
    finally:
        other.close()


def serve_kubevirt(plugin_dir: Path, name: str) -> socket.socket:
    """Something answering on KubeVirt's socket for the resource, as virt-handler would."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(plugin_dir / catalogue.kubevirt_socket(name)))
    listener.listen()
    return listener


async def test_the_agent_stands_down_where_kubevirt_serves(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    virt_handler = serve_kubevirt(plugin_dir, "kvm")
    try:
        async with running_agent(plugin_dir, host_root) as agent:
            await kubelet.wait_registered(TUN.resource)
            await agent.wait_until(
                lambda: metric(agent, "virtdev_agent_standing_down", KVM.resource) == 1,
                timeout=WAIT,
            )
            response = await get(agent, "/readyz")
            assert response.status_code == 503
            assert "standing down: KubeVirt's device plugin serves devices.kubevirt.io/kvm" in (
                response.text
            )
            assert "--take-over" in response.text
            assert KVM.resource not in kubelet.endpoints
            assert not (plugin_dir / catalogue.plugin_socket("kvm")).exists()
    finally:
        virt_handler.close()


async def test_the_agent_stands_down_when_kubevirt_starts_later(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root) as agent:
        endpoint = await kubelet.wait_registered(KVM.resource)
        virt_handler = serve_kubevirt(plugin_dir, "kvm")
        try:
            await agent.wait_until(
                lambda: metric(agent, "virtdev_agent_standing_down", KVM.resource) == 1,
                timeout=WAIT,
            )
            async with asyncio.timeout(WAIT):
                await endpoint.stream_ended.wait()  # our socket is gone, the stream with it
            assert not (plugin_dir / catalogue.plugin_socket("kvm")).exists()
        finally:
            virt_handler.close()


async def test_the_agent_takes_the_resource_back_when_kubevirt_is_gone(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    virt_handler = serve_kubevirt(plugin_dir, "kvm")
    async with running_agent(plugin_dir, host_root, kubevirt_grace=0.2) as agent:
        await agent.wait_until(
            lambda: metric(agent, "virtdev_agent_standing_down", KVM.resource) == 1,
            timeout=WAIT,
        )
        virt_handler.close()
        os.unlink(plugin_dir / catalogue.kubevirt_socket("kvm"))
        await kubelet.wait_registered(KVM.resource)
        assert metric(agent, "virtdev_agent_standing_down", KVM.resource) == 0


async def test_take_over_registers_even_where_kubevirt_serves(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    virt_handler = serve_kubevirt(plugin_dir, "kvm")
    try:
        async with running_agent(plugin_dir, host_root, take_over=True) as agent:
            await kubelet.wait_registered(KVM.resource)
            await kubelet.wait_registered(TUN.resource)
            assert metric(agent, "virtdev_agent_standing_down", KVM.resource) == 0
    finally:
        virt_handler.close()


async def test_streams_get_an_empty_list_at_shutdown_and_metrics_are_served(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root, device_count=3) as agent:
        await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
        await agent.wait_until(
            lambda: metric(agent, "virtdev_agent_list_and_watch_streams", KVM.resource) == 1,
            timeout=WAIT,
        )
        body = (await get(agent, "/metrics")).text
        for name in (
            "virtdev_agent_registrations_total",
            "virtdev_agent_reregistrations_total",
            "virtdev_agent_device_healthy",
            "virtdev_agent_allocations_total",
            "virtdev_agent_list_and_watch_streams",
        ):
            assert f'{name}{{resource="devices.kubevirt.io/kvm"}}' in body
        assert (await get(agent, "/healthz")).status_code == 200
        assert (await get(agent, "/livez")).text == "ok\n"
        assert "\nprocess_resident_memory_bytes " in body
        assert f'version="{virtdev.__version__}"}} 1.0' in body.split("virtdev_build_info{")[-1]
        endpoint = kubelet.endpoints[KVM.resource]
    async with asyncio.timeout(WAIT):
        await endpoint.stream_ended.wait()
    assert endpoint.lists[-1] == []
    assert metric(agent, "virtdev_agent_list_and_watch_streams", KVM.resource) == 0
    assert os.listdir(plugin_dir) == ["kubelet.sock"]


async def test_vhost_net_is_served_by_default(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    """KubeVirt's launchers request it themselves for virtio NICs; virt-handler serves it."""
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_for_devices(VHOST_NET.resource, all_have("Healthy"))
        responses = await kubelet.allocate(VHOST_NET.resource, [["vhost-net-000"]])
    assert [(d.host_path, d.container_path, d.permissions) for d in responses[0].devices] == [
        ("/dev/vhost-net", "/dev/vhost-net", agent.permissions)
    ]


async def test_a_node_without_vhost_net_advertises_it_unhealthy_until_the_module_loads(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    """As virt-handler does: registered anyway, allocatable 0 while /dev/vhost-net is missing,
    Healthy once `modprobe vhost_net` makes it; kvm and tun are unaffected."""
    (host_root / "dev/vhost-net").unlink()
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_for_devices(VHOST_NET.resource, all_have("Unhealthy"))
        await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
        await agent.wait_until(lambda: agent.readiness()[0], timeout=WAIT)
        assert "devices.kubevirt.io/vhost-net: registered" in agent.readiness()[1]
        make_node(host_root, "dev/vhost-net")
        await kubelet.wait_for_devices(VHOST_NET.resource, all_have("Healthy"))
    assert kubelet.violations == []


async def test_the_devices_can_still_be_narrowed(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root, devices=(KVM, TUN)) as agent:
        await kubelet.wait_registered(KVM.resource)
        await kubelet.wait_registered(TUN.resource)
        await agent.wait_until(lambda: agent.readiness()[0], timeout=WAIT)
        assert VHOST_NET.resource not in kubelet.endpoints
        assert not (plugin_dir / catalogue.plugin_socket(VHOST_NET.name)).exists()


async def test_the_plugin_directory_removed_and_made_again_is_survived(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_registered(KVM.resource)
        await kubelet.wait_registered(TUN.resource)
        await kubelet.stop()
        for entry in plugin_dir.iterdir():
            entry.unlink()
        plugin_dir.rmdir()
        await agent.wait_until(
            lambda: "was removed" in agent.readiness()[1] or "No such file" in agent.readiness()[1],
            timeout=WAIT,
        )
        plugin_dir.mkdir()
        await kubelet.start()
        await kubelet.wait_registered(KVM.resource, count=2)
        await kubelet.wait_registered(TUN.resource, count=2)


async def test_a_stale_kubevirt_socket_does_not_make_the_agent_stand_down(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(plugin_dir / catalogue.kubevirt_socket("kvm")))  # nobody listens
    leftover.close()
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_registered(KVM.resource)
        assert metric(agent, "virtdev_agent_standing_down", KVM.resource) == 0
    # Not ours: the agent leaves KubeVirt's file alone.
    assert (plugin_dir / catalogue.kubevirt_socket("kvm")).exists()


async def test_a_negative_allocation_size_is_refused(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root):
        endpoint = await kubelet.wait_registered(KVM.resource)
        request = api.PreferredAllocationRequest(
            container_requests=[
                api.ContainerPreferredAllocationRequest(
                    available_deviceIDs=["kvm-000"], allocation_size=-1
                )
            ]
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await endpoint.stub.GetPreferredAllocation(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "must not be negative" in (raised.value.details() or "")
        options = await endpoint.stub.GetDevicePluginOptions(api.Empty(), timeout=30)
        assert options == api.DevicePluginOptions(get_preferred_allocation_available=True)


async def test_a_dead_kubelets_socket_is_waited_out(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root) as agent:
        for device in SERVED:
            await kubelet.wait_registered(device.resource)
        await kubelet.stop()
        leftover = socket.socket(socket.AF_UNIX)
        leftover.bind(kubelet.socket)  # what a killed kubelet leaves: a socket nobody accepts on
        leftover.close()
        await agent.wait_until(
            lambda: agent.readiness()[1].count("waiting for the kubelet") == len(SERVED),
            timeout=WAIT,
        )
        await kubelet.restart()  # the successor wipes the directory and serves
        for device in SERVED:
            await kubelet.wait_registered(device.resource, count=2)
        assert metric(agent, "virtdev_agent_plugin_restarts_total", KVM.resource) == 0


async def test_back_to_back_kubelet_restarts_end_registered_with_the_last(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    async with running_agent(plugin_dir, host_root) as agent:
        await kubelet.wait_registered(KVM.resource)
        await kubelet.wait_registered(TUN.resource)
        for _ in range(5):
            await kubelet.restart()  # no waiting in between: registrations race the restarts
        # `endpoints` holds only what the running (last) kubelet accepted.
        for device in SERVED:
            await kubelet.wait_registered(device.resource)
            await kubelet.wait_for_devices(device.resource, all_have("Healthy"))
        await agent.wait_until(lambda: agent.readiness()[0], timeout=WAIT)
    # A registration may reach a kubelet that has just wiped the plugin's new socket; the
    # agent then serves and registers again. Nothing else may be refused.
    assert all("failed to dial device plugin" in refusal for refusal in kubelet.refusals)
