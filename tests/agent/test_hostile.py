"""Hostile and malformed input never kills the agent.

A real agent (in-process; at the end once as the real `virtdev agent` process) serves over
real unix sockets and is registered with the test kubelet; each test throws something a
kubelet would never send at it — empty requests, tens of thousands of IDs or containers,
unknown and absurd IDs, messages over gRPC's 4 MiB limit, bytes that are not HTTP/2, clients
that vanish in the middle of a ListAndWatch stream — and then checks that the
agent still answers (`GetDevicePluginOptions` and a fresh `Allocate` over a new connection),
that its registration with the kubelet is the same one, its stream to the kubelet still open,
and the open-streams gauge back at the kubelet's one stream.

The gauge is waited on through the agent's own "ListAndWatch stream closed" log records, not
by polling: `StreamLog` wakes the test on every such record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.app import Agent
from agent.servicer import OPTIONS
from agent.v1beta1 import api_pb2 as api
from agent.v1beta1.api_pb2_grpc import DevicePluginStub
from tests.agent.helpers import KVM, SERVED, all_have, make_node, running_agent
from tests.agent.kubelet import WAIT, Endpoint, TestKubelet
from virtdev import catalogue

#: gRPC's default receive limit, which the agent keeps.
RECEIVE_LIMIT = 4 * 1024 * 1024
#: A local channel of its own (no connection shared with the kubelet's) and no send limit.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
STREAMS = "virtdev_agent_list_and_watch_streams"
KVM_IDS = [f"kvm-{n:03d}" for n in range(catalogue.DEFAULT_DEVICE_COUNT)]
AGENT = [sys.executable, "-m", "virtdev.cli", "agent"]
OPENED, CLOSED = "ListAndWatch stream opened", "ListAndWatch stream closed"


class StreamLog(logging.Handler):
    """Wakes waiters whenever the servicer logs (a stream opened or closed)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed  # taken before the check: a record in between wakes us
                if condition():
                    return
                await changed.wait()


@dataclass
class Subject:
    """The agent under attack, and what it must still look like after each attack."""

    agent: Agent
    kubelet: TestKubelet
    endpoint: Endpoint
    socket: str
    log: StreamLog

    def streams(self) -> float:
        value = self.agent.metrics.registry.get_sample_value(STREAMS, {"resource": KVM.resource})
        assert value is not None
        return value

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix:{self.socket}", options=CHANNEL_OPTIONS)

    async def assert_unharmed(self) -> None:
        """Still answering, still registered the same way, no stream but the kubelet's."""
        async with self.channel() as channel:
            stub = DevicePluginStub(channel)
            assert await stub.GetDevicePluginOptions(api.Empty(), timeout=WAIT) == OPTIONS
            request = api.AllocateRequest(
                container_requests=[api.ContainerAllocateRequest(devices_ids=["kvm-001"])]
            )
            response = await stub.Allocate(request, timeout=WAIT)
        assert response.container_responses[0].devices[0].host_path == "/dev/kvm"
        await self.kubelet.allocate(KVM.resource, [["kvm-002"]])
        assert self.kubelet.endpoints[KVM.resource] is self.endpoint
        assert not self.endpoint.stream_ended.is_set()
        assert len(self.kubelet.registrations) == len(SERVED)  # each resource once
        assert self.agent.readiness()[0]
        await self.log.wait_until(lambda: self.streams() == 1)
        assert self.kubelet.violations == []


@pytest.fixture
def stream_log() -> Iterator[StreamLog]:
    logger = logging.getLogger("agent.servicer")
    handler, level = StreamLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
async def subject(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet, stream_log: StreamLog
) -> AsyncIterator[Subject]:
    async with running_agent(plugin_dir, host_root) as agent:
        endpoint = await kubelet.wait_registered(KVM.resource)
        for device in SERVED:
            await kubelet.wait_registered(device.resource)
        await kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
        await agent.wait_until(lambda: agent.readiness()[0], timeout=WAIT)
        socket = str(plugin_dir / catalogue.plugin_socket("kvm"))
        yield Subject(agent, kubelet, endpoint, socket, stream_log)


def allocate_request(*containers: list[str]) -> api.AllocateRequest:
    return api.AllocateRequest(
        container_requests=[api.ContainerAllocateRequest(devices_ids=ids) for ids in containers]
    )


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


# -- Allocate ---------------------------------------------------------------------------------


async def test_an_empty_allocate_request_gets_an_empty_answer(subject: Subject) -> None:
    response = await subject.endpoint.stub.Allocate(api.AllocateRequest(), timeout=WAIT)
    assert list(response.container_responses) == []
    await subject.assert_unharmed()


async def test_a_container_request_without_ids_is_refused(subject: Subject) -> None:
    error = await refused(subject.endpoint.stub.Allocate(allocate_request([]), timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "names no device IDs" in (error.details() or "")
    await subject.assert_unharmed()


async def test_ten_thousand_ids_with_duplicates_are_the_one_node(subject: Subject) -> None:
    ids = [KVM_IDS[n % len(KVM_IDS)] for n in range(10_000)]
    response = await subject.endpoint.stub.Allocate(allocate_request(ids), timeout=WAIT)
    assert [(d.host_path, d.permissions) for d in response.container_responses[0].devices] == [
        ("/dev/kvm", subject.agent.permissions)
    ]
    await subject.assert_unharmed()


async def test_ten_thousand_unknown_ids_are_refused_naming_a_few(subject: Subject) -> None:
    """The answer must stay a readable INVALID_ARGUMENT: listing every ID would overflow the
    kubelet's 16 KiB metadata limit and turn into a RESOURCE_EXHAUSTED about metadata."""
    unknown = [f"gpu-{n:05d}" for n in range(10_000)]
    request = allocate_request(["kvm-000", *unknown, *unknown[:100]])
    error = await refused(subject.endpoint.stub.Allocate(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert "unknown device IDs for devices.kubevirt.io/kvm: gpu-00000, gpu-00001" in details
    assert "and 9990 more" in details
    assert len(details) < 1024
    await subject.assert_unharmed()


async def test_an_absurdly_long_unknown_id_is_named_cut_short(subject: Subject) -> None:
    error = await refused(
        subject.endpoint.stub.Allocate(allocate_request(["x" * 1_000_000]), timeout=WAIT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert "unknown device IDs" in details and "xxxx" in details
    assert len(details) < 1024
    await subject.assert_unharmed()


@pytest.mark.parametrize(
    "device_id",
    ["", " ", "kvm-000\n", "kvm-0000", "KVM-000", "../../etc/passwd", "kvm-\x00", "ключ-000"],
)
async def test_odd_ids_are_refused_as_unknown(subject: Subject, device_id: str) -> None:
    error = await refused(
        subject.endpoint.stub.Allocate(allocate_request(["kvm-000", device_id]), timeout=WAIT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown device IDs" in (error.details() or "")
    await subject.assert_unharmed()


async def test_a_request_over_the_receive_limit_is_refused(subject: Subject) -> None:
    ids = ["kvm-000"] * (RECEIVE_LIMIT // 9 + 1)  # 9 bytes on the wire each: over 4 MiB
    assert allocate_request(ids).ByteSize() > RECEIVE_LIMIT
    error = await refused(subject.endpoint.stub.Allocate(allocate_request(ids), timeout=WAIT))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await subject.assert_unharmed()


async def test_an_allocate_request_for_a_thousand_containers_is_answered(
    subject: Subject,
) -> None:
    response = await subject.endpoint.stub.Allocate(
        allocate_request(*([["kvm-000"]] * 1000)), timeout=WAIT
    )
    assert len(response.container_responses) == 1000
    await subject.assert_unharmed()


async def test_an_allocate_request_for_200000_containers_is_refused(subject: Subject) -> None:
    """The kubelet asks for one container per call. 200,000 in one request (2 MiB) would hold
    the event loop for seconds building a 6 MiB answer: probes, health and the kubelet's own
    calls would wait. The agent refuses it outright."""
    request = allocate_request(*([["kvm-000"]] * 200_000))
    assert request.ByteSize() < RECEIVE_LIMIT
    error = await refused(subject.endpoint.stub.Allocate(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "200000 container requests in one call" in (error.details() or "")
    await subject.assert_unharmed()


# -- GetPreferredAllocation and PreStartContainer ---------------------------------------------


def preferred_request(
    available: list[str], must_include: list[str], size: int
) -> api.PreferredAllocationRequest:
    return api.PreferredAllocationRequest(
        container_requests=[
            api.ContainerPreferredAllocationRequest(
                available_deviceIDs=available,
                must_include_deviceIDs=must_include,
                allocation_size=size,
            )
        ]
    )


async def test_a_size_larger_than_available_proposes_all_available(subject: Subject) -> None:
    request = preferred_request(["kvm-004", "kvm-002", "gpu-1"], [], 2**31 - 1)
    response = await subject.endpoint.stub.GetPreferredAllocation(request, timeout=WAIT)
    assert list(response.container_responses[0].deviceIDs) == ["kvm-002", "kvm-004"]
    await subject.assert_unharmed()


@pytest.mark.parametrize("size", [-1, -(2**31)])
async def test_a_negative_size_is_refused(subject: Subject, size: int) -> None:
    request = preferred_request(KVM_IDS, [], size)
    error = await refused(subject.endpoint.stub.GetPreferredAllocation(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    await subject.assert_unharmed()


async def test_unknown_must_include_ids_are_answered(subject: Subject) -> None:
    """The kubelet only names IDs it was given; unknown ones are passed back as documented
    (every must-include ID first), and Allocate is where they would be refused."""
    request = preferred_request(["kvm-000"], ["gpu-7", "gpu-7", "x" * 10_000], 3)
    response = await subject.endpoint.stub.GetPreferredAllocation(request, timeout=WAIT)
    assert list(response.container_responses[0].deviceIDs) == ["gpu-7", "x" * 10_000, "kvm-000"]
    await subject.assert_unharmed()


async def test_a_preferred_allocation_for_900000_containers_is_refused(subject: Subject) -> None:
    """3.6 MiB of empty container requests, each asking for one device: answered one by one,
    about 13 s of a blocked event loop on this machine. Refused at once instead."""
    request = api.PreferredAllocationRequest(
        container_requests=[api.ContainerPreferredAllocationRequest(allocation_size=1)] * 900_000
    )
    assert request.ByteSize() < RECEIVE_LIMIT
    error = await refused(subject.endpoint.stub.GetPreferredAllocation(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "900000 container requests in one call" in (error.details() or "")
    await subject.assert_unharmed()


async def test_a_preferred_allocation_over_many_ids_and_containers(subject: Subject) -> None:
    available = [f"kvm-{n:05d}" for n in range(100_000)] + KVM_IDS
    request = api.PreferredAllocationRequest(
        container_requests=[
            api.ContainerPreferredAllocationRequest(
                available_deviceIDs=available, allocation_size=1
            )
        ]
        * 3
    )
    response = await subject.endpoint.stub.GetPreferredAllocation(request, timeout=WAIT)
    assert [list(r.deviceIDs) for r in response.container_responses] == [["kvm-000"]] * 3
    await subject.assert_unharmed()


@pytest.mark.parametrize(
    "ids", [[], ["gpu-0"], ["\x00" * 1000], ["kvm-000"] * 10_000, [f"j{n}" for n in range(10_000)]]
)
async def test_pre_start_container_with_junk_is_answered(subject: Subject, ids: list[str]) -> None:
    request = api.PreStartContainerRequest(devices_ids=ids)
    response = await subject.endpoint.stub.PreStartContainer(request, timeout=WAIT)
    assert response == api.PreStartContainerResponse()
    await subject.assert_unharmed()


# -- the wire itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(os.urandom(65_536), id="random-bytes"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: agent\r\n\r\n", id="http1"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 4096, id="preface-then-junk"),
        pytest.param(b"\x00" * 100_000, id="zeros"),
    ],
)
async def test_bytes_that_are_not_http2_are_dropped(subject: Subject, payload: bytes) -> None:
    reader, writer = await asyncio.open_unix_connection(subject.socket)
    try:
        writer.write(payload)
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(65_536):  # whatever it answers, it hangs up
                    pass
    finally:
        writer.close()
    await subject.assert_unharmed()


async def test_connections_that_say_nothing_do_not_block_anyone(subject: Subject) -> None:
    idle = [await asyncio.open_unix_connection(subject.socket) for _ in range(50)]
    half = [await asyncio.open_unix_connection(subject.socket) for _ in range(10)]
    for _, writer in half:
        writer.write(b"PRI * HTTP/2.0\r\n")  # half a preface, then silence
        await writer.drain()
    try:
        await subject.assert_unharmed()
    finally:
        for _, writer in idle + half:
            writer.close()  # abruptly, all at once
    await subject.assert_unharmed()


async def test_undecodable_messages_and_unknown_methods_are_errors(subject: Subject) -> None:
    async with subject.channel() as channel:
        for method in ("Allocate", "GetPreferredAllocation", "PreStartContainer", "ListAndWatch"):
            call = channel.unary_unary(f"/v1beta1.DevicePlugin/{method}")
            error = await refused(call(b"\xff\xff\xff\xff\x0f", timeout=WAIT))
            # grpc.aio reports the servicer's DecodeError as UNKNOWN (the sync server: INTERNAL)
            assert error.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), method
        error = await refused(channel.unary_unary("/v1beta1.DevicePlugin/Nope")(b"", timeout=WAIT))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    await subject.assert_unharmed()


# -- ListAndWatch clients that vanish ---------------------------------------------------------


async def test_a_client_that_closes_its_channel_mid_stream(subject: Subject) -> None:
    channel = subject.channel()
    call = DevicePluginStub(channel).ListAndWatch(api.Empty())
    first = await call.read()
    assert isinstance(first, api.ListAndWatchResponse)
    assert len(first.devices) == catalogue.DEFAULT_DEVICE_COUNT
    await subject.log.wait_until(lambda: subject.streams() == 2)
    await channel.close()  # no cancel, no goodbye
    await subject.assert_unharmed()


STREAMING_CLIENT = (
    "import sys, grpc\n"
    "from agent.v1beta1 import api_pb2 as api\n"
    "from agent.v1beta1.api_pb2_grpc import DevicePluginStub\n"
    "channel = grpc.insecure_channel('unix:' + sys.argv[1])\n"
    "stream = DevicePluginStub(channel).ListAndWatch(api.Empty())\n"
    "next(stream)\n"
    "print('streaming', flush=True)\n"
    "for _ in stream:\n"
    "    pass\n"
)


@contextlib.asynccontextmanager
async def streaming_client(socket: str) -> AsyncIterator[None]:
    """A client process with a ListAndWatch stream open, SIGKILLed on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STREAMING_CLIENT, socket, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT):
            assert await process.stdout.readline() == b"streaming\n"
        yield
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()


async def test_a_client_process_killed_mid_stream(subject: Subject) -> None:
    async with streaming_client(subject.socket):
        await subject.log.wait_until(lambda: subject.streams() == 2)
    await subject.assert_unharmed()


async def test_hundreds_of_streams_opened_and_dropped(subject: Subject, host_root: Path) -> None:
    channels = [subject.channel() for _ in range(20)]
    calls = [DevicePluginStub(channels[n % 20]).ListAndWatch(api.Empty()) for n in range(200)]
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(call.read() for call in calls))
    await subject.log.wait_until(lambda: subject.streams() == 201)
    for n, call in enumerate(calls):
        if n % 2:
            call.cancel()  # half are cancelled politely
    for channel in channels:
        await channel.close()  # the others just vanish with their connections
    await subject.assert_unharmed()
    # The kubelet's stream still hears of health changes.
    (host_root / "dev/kvm").unlink()
    await subject.kubelet.wait_for_devices(KVM.resource, all_have("Unhealthy"))
    make_node(host_root, "dev/kvm")
    await subject.kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))


async def test_streams_dropped_while_the_health_flips(subject: Subject, host_root: Path) -> None:
    channel = subject.channel()
    calls = [DevicePluginStub(channel).ListAndWatch(api.Empty()) for _ in range(20)]
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(call.read() for call in calls))
    for _ in range(10):
        (host_root / "dev/kvm").unlink()
        make_node(host_root, "dev/kvm")
    await channel.close()  # while the agent may be writing the new lists
    await subject.kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
    await subject.assert_unharmed()


async def test_a_stream_nobody_reads_holds_up_no_one(
    subject: Subject, host_root: Path, plugin_dir: Path
) -> None:
    """A client opens ListAndWatch and never reads: 400 lists (~1 MB) pile up against gRPC's
    flow control. The kubelet's stream still gets every change, and a kubelet restart is
    still followed by a registration."""
    channel = subject.channel()
    call = DevicePluginStub(channel).ListAndWatch(api.Empty())  # never read
    try:
        await subject.log.wait_until(lambda: subject.streams() == 2)
        endpoint = subject.endpoint
        before = len(endpoint.lists)
        for _ in range(200):
            (host_root / "dev/kvm").unlink()
            await subject.kubelet.wait_for_devices(KVM.resource, all_have("Unhealthy"))
            make_node(host_root, "dev/kvm")
            await subject.kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
        assert len(endpoint.lists) == before + 400  # not one change lost or repeated
        await subject.kubelet.restart()
        await subject.kubelet.wait_registered(KVM.resource, count=2)
        await subject.kubelet.wait_for_devices(KVM.resource, all_have("Healthy"))
    finally:
        call.cancel()
        await channel.close()
    await subject.log.wait_until(lambda: subject.streams() == 1)
    assert subject.kubelet.violations == []


# -- any request at all -----------------------------------------------------------------------

ids = st.lists(st.sampled_from(KVM_IDS) | st.text(max_size=80), max_size=30)
hypothesis_settings = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one agent for all examples
)


@hypothesis_settings
@given(containers=st.lists(ids, max_size=4))
async def test_any_allocate_request_is_answered_or_refused(
    subject: Subject, containers: list[list[str]]
) -> None:
    request = allocate_request(*containers)
    valid = all(container and set(container) <= set(KVM_IDS) for container in containers)
    try:
        response = await subject.endpoint.stub.Allocate(request, timeout=WAIT)
    except grpc.aio.AioRpcError as error:
        assert not valid
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(error.details() or "") < 1024
    else:
        assert valid
        assert len(response.container_responses) == len(containers)
    await subject.assert_unharmed()


@hypothesis_settings
@given(available=ids, must_include=ids, size=st.integers(-(2**31), 2**31 - 1))
async def test_any_preferred_allocation_request_is_answered_or_refused(
    subject: Subject, available: list[str], must_include: list[str], size: int
) -> None:
    request = preferred_request(available, must_include, size)
    try:
        response = await subject.endpoint.stub.GetPreferredAllocation(request, timeout=WAIT)
    except grpc.aio.AioRpcError as error:
        assert size < 0
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    else:
        chosen = list(response.container_responses[0].deviceIDs)
        must = list(dict.fromkeys(must_include))
        assert chosen[: len(must)] == must
        assert set(chosen[len(must) :]) <= set(available) & set(KVM_IDS)
        assert len(chosen) == len(set(chosen)) <= max(size, len(must))
    await subject.assert_unharmed()


# -- the real process -------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_real_process_survives_a_barrage(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet
) -> None:
    """`virtdev agent` itself, with gRPC's C core and the JSON logs of production: the worst
    of the above one after the other, then it still serves, and stops cleanly."""
    socket = str(plugin_dir / catalogue.plugin_socket("kvm"))
    process = await asyncio.create_subprocess_exec(
        *AGENT,
        f"--device-plugin-dir={plugin_dir}",
        f"--host-root={host_root}",
        "--metrics-port=0",
        "--log-format=json",
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[dict[str, Any]] = []
    logged = asyncio.Event()

    async def read_log() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"level": "raw", "msg": line.decode(errors="replace")})
            logged.set()

    def count(msg: str) -> int:
        return sum(1 for line in lines if line["msg"] == msg)

    reader = asyncio.create_task(read_log())
    try:
        endpoint = await kubelet.wait_registered(KVM.resource)
        for device in SERVED:
            await kubelet.wait_for_devices(device.resource, all_have("Healthy"))
        stub = endpoint.stub

        reader_, writer = await asyncio.open_unix_connection(socket)
        writer.write(os.urandom(65_536))
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(ConnectionResetError):
                while await reader_.read(65_536):
                    pass
        writer.close()
        big = allocate_request(["kvm-000"] * (RECEIVE_LIMIT // 9 + 1))
        assert (await refused(stub.Allocate(big, timeout=WAIT))).code() == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        unknown = allocate_request([f"gpu-{n:05d}" for n in range(10_000)])
        error = await refused(stub.Allocate(unknown, timeout=WAIT))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "and 9990 more" in (error.details() or "")
        many = allocate_request(*([["kvm-000"]] * 200_000))
        assert (await refused(stub.Allocate(many, timeout=WAIT))).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        channel = grpc.aio.insecure_channel(f"unix:{socket}", options=CHANNEL_OPTIONS)
        await DevicePluginStub(channel).ListAndWatch(api.Empty()).read()
        await channel.close()
        async with streaming_client(socket):
            pass

        # The kubelet's stream for each resource and our two were opened; ours both ended.
        async with asyncio.timeout(WAIT):
            while (count(OPENED), count(CLOSED)) != (len(SERVED) + 2, 2):
                logged.clear()
                await logged.wait()
        async with grpc.aio.insecure_channel(f"unix:{socket}", options=CHANNEL_OPTIONS) as fresh:
            options = await DevicePluginStub(fresh).GetDevicePluginOptions(
                api.Empty(), timeout=WAIT
            )
            assert options == OPTIONS
        await kubelet.allocate(KVM.resource, [["kvm-003"]])
        assert kubelet.endpoints[KVM.resource] is endpoint
        assert not endpoint.stream_ended.is_set()
        assert len(kubelet.registrations) == len(SERVED)

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.gather(reader, return_exceptions=True)
    assert [line for line in lines if line["level"] not in ("info", "warning")] == []
    assert count("Allocate refused") == 2
    assert endpoint.lists[-1] == []  # the last word at shutdown
