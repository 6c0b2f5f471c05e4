"""A kubelet for tests: the Registration side of the device plugin API, behaving like the real
one over real gRPC on real unix sockets.

What it copies from the kubelet (see /work/shared/reference/device-plugin-api.md):
- it serves `Registration` on `kubelet.sock` and validates each RegisterRequest (version,
  extended resource name outside `kubernetes.io/`, bare socket file name);
- inside the Register handler it dials the plugin's socket and calls GetDevicePluginOptions,
  so a plugin that registers before it serves is refused, as by a kubelet >= 1.25;
- it keeps one ListAndWatch stream per resource, drops the old one when a resource registers
  again, checks every list it receives (distinct IDs of at most 63 characters, known health
  strings) and calls Allocate once per container, checking each DeviceSpec as the runtime it
  hands them to would (absolute paths; permissions made of `r`, `w`, `m`, which runc's
  device rules accept and nothing else);
- `restart()` does what a starting kubelet does: delete every socket in the directory (not its
  checkpoint file), then serve `kubelet.sock` again.

Tests wait on what it received (`wait_registered`, `wait_for_devices`) with generous timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from agent.v1beta1 import api_pb2 as api
from agent.v1beta1.api_pb2_grpc import (
    DevicePluginStub,
    add_RegistrationServicer_to_server,
)

SUPPORTED_VERSIONS = ("v1beta1",)
CHECKPOINT = "kubelet_internal_checkpoint"
#: A qualified name with a DNS-subdomain prefix: `domain/name`.
_EXTENDED = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
WAIT = 30.0  # generous: CI is a loaded 2-core machine

Devices = list[tuple[str, str]]


class RegistrationRefused(Exception):
    pass


def validate_request(request: api.RegisterRequest) -> None:
    """The kubelet's checks on a RegisterRequest; raises RegistrationRefused."""
    if request.version not in SUPPORTED_VERSIONS:
        raise RegistrationRefused(
            f"requested device plugin version {request.version!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_VERSIONS)}"
        )
    name = request.resource_name
    domain = name.split("/", 1)[0]
    if not _EXTENDED.match(name) or domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        raise RegistrationRefused(f"invalid extended resource name: {name!r}")
    if not request.endpoint or "/" in request.endpoint or request.endpoint in (".", ".."):
        raise RegistrationRefused(f"endpoint must be a bare socket file name: {request.endpoint!r}")


@dataclass
class Endpoint:
    """One registered plugin, as the kubelet holds it."""

    request: api.RegisterRequest
    channel: grpc.aio.Channel
    stub: DevicePluginStub
    options: api.DevicePluginOptions
    lists: list[Devices] = field(default_factory=list)
    #: Loop time at which each list arrived (for the benchmark).
    received_at: list[float] = field(default_factory=list)
    stream_ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class TestKubelet:
    __test__ = False  # not a pytest test class

    def __init__(self, directory: str, *, dial_timeout: float = 10.0) -> None:
        self.directory = directory
        self.socket = os.path.join(directory, "kubelet.sock")
        self.dial_timeout = dial_timeout
        self.endpoints: dict[str, Endpoint] = {}
        self.registrations: list[api.RegisterRequest] = []
        #: (resource, loop time) when each registration completed, for the benchmark.
        self.registered_at: list[tuple[str, float]] = []
        self.refusals: list[str] = []
        #: Refuse this many Register calls (per resource) as a busy kubelet would, then accept.
        self.refuse_registrations: dict[str, int] = {}
        #: Anything a plugin sent that a real kubelet would reject or choke on.
        self.violations: list[str] = []
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Condition()
        self.started_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        server = grpc.aio.server()
        add_RegistrationServicer_to_server(self, server)
        server.add_insecure_port(f"unix:{self.socket}")
        await server.start()
        self._server = server
        #: When kubelet.sock began accepting connections.
        self.started_at = asyncio.get_running_loop().time()

    async def stop(self) -> None:
        """Stop serving and drop every plugin connection (the kubelet process ends)."""
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        for endpoint in list(self.endpoints.values()):
            await self._drop(endpoint)
        self.endpoints.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    async def restart(self) -> None:
        """A new kubelet: stop, delete every socket in the directory, serve kubelet.sock."""
        await self.stop()
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name != CHECKPOINT and stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        await self.start()

    async def _drop(self, endpoint: Endpoint) -> None:
        if endpoint.task is not None:
            endpoint.task.cancel()
            await asyncio.gather(endpoint.task, return_exceptions=True)
        await endpoint.channel.close()

    # -- the Registration service ----------------------------------------------------------

    async def Register(
        self, request: api.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> api.Empty:
        try:
            validate_request(request)
            if self.refuse_registrations.get(request.resource_name, 0) > 0:
                self.refuse_registrations[request.resource_name] -= 1
                raise RegistrationRefused(f"{request.resource_name}: kubelet busy, try again")
            channel, stub, options = await self._dial(request.endpoint)
        except RegistrationRefused as error:
            self.refusals.append(str(error))
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        old = self.endpoints.pop(request.resource_name, None)
        if old is not None:
            await self._drop(old)
        endpoint = Endpoint(request=request, channel=channel, stub=stub, options=options)
        endpoint.task = asyncio.create_task(self._list_and_watch(endpoint))
        self.endpoints[request.resource_name] = endpoint
        self.registrations.append(request)
        self.registered_at.append((request.resource_name, asyncio.get_running_loop().time()))
        await self._notify()
        return api.Empty()

    async def _dial(
        self, endpoint: str
    ) -> tuple[grpc.aio.Channel, DevicePluginStub, api.DevicePluginOptions]:
        """Dial the plugin (blocking, with a deadline) and ask its options, inside Register."""
        # Its own subchannel pool, like the kubelet's fresh dial: gRPC would otherwise reuse a
        # connection made before the socket file was deleted.
        channel = grpc.aio.insecure_channel(
            f"unix:{os.path.join(self.directory, endpoint)}",
            options=[("grpc.use_local_subchannel_pool", 1)],
        )
        stub = DevicePluginStub(channel)
        try:
            options = await stub.GetDevicePluginOptions(
                api.Empty(), timeout=self.dial_timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as error:
            await channel.close()
            raise RegistrationRefused(
                f"failed to dial device plugin {endpoint}: {error.code().name}"
            ) from None
        return channel, stub, options

    async def _list_and_watch(self, endpoint: Endpoint) -> None:
        try:
            async for response in endpoint.stub.ListAndWatch(api.Empty()):
                devices = [(device.ID, device.health) for device in response.devices]
                self._check(endpoint.request.resource_name, devices)
                endpoint.lists.append(devices)
                endpoint.received_at.append(asyncio.get_running_loop().time())
                await self._notify()
        except grpc.aio.AioRpcError:
            pass  # the plugin went away: a real kubelet marks the devices unhealthy
        finally:
            endpoint.stream_ended.set()
            await self._notify()

    def _check(self, resource: str, devices: Devices) -> None:
        ids = [device_id for device_id, _ in devices]
        if len(set(ids)) != len(ids):
            self.violations.append(f"{resource}: duplicate device IDs")
        for device_id, health in devices:
            if not device_id or len(device_id) > 63:
                self.violations.append(f"{resource}: bad device ID {device_id!r}")
            if health not in ("Healthy", "Unhealthy"):
                self.violations.append(f"{resource}: bad health {health!r}")

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- what tests wait on and call ----------------------------------------------------------

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(condition)

    async def wait_registered(
        self, resource: str, *, count: int = 1, timeout: float = WAIT
    ) -> Endpoint:
        """Wait until `resource` has been registered `count` times in all (this kubelet's life
        and earlier ones), and return its endpoint."""

        def done() -> bool:
            seen = sum(1 for r in self.registrations if r.resource_name == resource)
            return seen >= count and resource in self.endpoints

        await self.wait_until(done, timeout=timeout)
        return self.endpoints[resource]

    async def wait_for_devices(
        self,
        resource: str,
        condition: Callable[[Devices], bool],
        *,
        timeout: float = WAIT,
    ) -> Devices:
        """Wait until the latest list the resource sent satisfies `condition`."""

        def latest() -> Devices | None:
            endpoint = self.endpoints.get(resource)
            return endpoint.lists[-1] if endpoint is not None and endpoint.lists else None

        def done() -> bool:
            devices = latest()
            return devices is not None and condition(devices)

        await self.wait_until(done, timeout=timeout)
        result = latest()
        assert result is not None
        return result

    async def allocate(
        self, resource: str, containers: list[list[str]]
    ) -> list[api.ContainerAllocateResponse]:
        """Admit a pod: one Allocate call per container, as the kubelet does."""
        stub = self.endpoints[resource].stub
        responses = []
        for ids in containers:
            request = api.AllocateRequest(
                container_requests=[api.ContainerAllocateRequest(devices_ids=ids)]
            )
            response = await stub.Allocate(request, timeout=WAIT)
            responses.append(response.container_responses[0])
            for spec in response.container_responses[0].devices:
                self._check_spec(resource, spec)
        return responses

    def _check_spec(self, resource: str, spec: api.DeviceSpec) -> None:
        for path in (spec.host_path, spec.container_path):
            if not path.startswith("/"):
                self.violations.append(f"{resource}: device path {path!r} is not absolute")
        letters = spec.permissions
        if not letters or set(letters) - set("rwm") or len(set(letters)) != len(letters):
            self.violations.append(f"{resource}: bad device permissions {letters!r}")
