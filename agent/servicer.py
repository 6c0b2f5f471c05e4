"""The `v1beta1.DevicePlugin` service for one resource: wire messages in and out, nothing else.

What the answers are is decided in `agent.devices`; the health comes from a `HealthState`
that outlives this servicer (a new servicer is made each time the plugin serves again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from agent import devices
from agent.health import HealthState
from agent.metrics import AgentMetrics
from agent.v1beta1 import api_pb2 as api
from virtdev.catalogue import Device

log = logging.getLogger(__name__)

#: What the agent tells the kubelet in Register and GetDevicePluginOptions.
OPTIONS = api.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)
#: The kubelet asks for one container per call. A request for hundreds of thousands (4 MiB
#: allows ~900,000) would hold the event loop for seconds, probes and health updates with it.
MAX_CONTAINER_REQUESTS = 1000


def _too_many(count: int) -> str | None:
    if count <= MAX_CONTAINER_REQUESTS:
        return None
    return f"{count} container requests in one call; at most {MAX_CONTAINER_REQUESTS}"


class DevicePluginServicer:
    """Methods named as the service's rpcs, registered with `add_to_server`."""

    def __init__(
        self,
        *,
        device: Device,
        ids: tuple[str, ...],
        permissions: str,
        health: HealthState,
        metrics: AgentMetrics,
    ) -> None:
        self._device = device
        self._permissions = permissions
        self._ids = ids
        self._known = frozenset(ids)
        self._health = health
        self._metrics = metrics
        self._closing = asyncio.Event()

    def close(self) -> None:
        """Make every ListAndWatch stream send an empty list and end (before server.stop)."""
        self._closing.set()

    def _device_list(self) -> api.ListAndWatchResponse:
        health = self._health.value
        return api.ListAndWatchResponse(
            devices=[api.Device(ID=device_id, health=health) for device_id in self._ids]
        )

    async def GetDevicePluginOptions(
        self, request: api.Empty, context: grpc.aio.ServicerContext
    ) -> api.DevicePluginOptions:
        return OPTIONS

    async def ListAndWatch(
        self, request: api.Empty, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api.ListAndWatchResponse]:
        resource = self._device.resource
        streams = self._metrics.streams.labels(resource)
        streams.inc()
        log.info("ListAndWatch stream opened", extra={"resource": resource})
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while not self._closing.is_set():
                changed = self._health.changed()  # before reading the value: no change lost
                yield self._device_list()
                waiter = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait({waiter, closing}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            yield api.ListAndWatchResponse(devices=[])
        finally:
            # Cancelled when the kubelet goes away: the task ends here, nothing is left behind.
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(closing, return_exceptions=True)
            streams.dec()
            log.info("ListAndWatch stream closed", extra={"resource": resource})

    async def GetPreferredAllocation(
        self, request: api.PreferredAllocationRequest, context: grpc.aio.ServicerContext
    ) -> api.PreferredAllocationResponse:
        if error := _too_many(len(request.container_requests)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        responses = []
        for container in request.container_requests:
            try:
                chosen = devices.preferred_allocation(
                    self._ids,
                    available=container.available_deviceIDs,
                    must_include=container.must_include_deviceIDs,
                    size=container.allocation_size,
                )
            except devices.AllocationError as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            responses.append(api.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return api.PreferredAllocationResponse(container_responses=responses)

    async def Allocate(
        self, request: api.AllocateRequest, context: grpc.aio.ServicerContext
    ) -> api.AllocateResponse:
        resource = self._device.resource
        if error := _too_many(len(request.container_requests)):
            self._metrics.allocation_errors.labels(resource).inc()
            log.warning("Allocate refused", extra={"resource": resource, "error": error})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        responses = []
        for container in request.container_requests:
            try:
                spec = devices.allocate(
                    self._device,
                    self._known,
                    container.devices_ids,
                    permissions=self._permissions,
                )
            except devices.AllocationError as error:
                self._metrics.allocation_errors.labels(resource).inc()
                log.warning("Allocate refused", extra={"resource": resource, "error": str(error)})
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            responses.append(
                api.ContainerAllocateResponse(
                    devices=[
                        api.DeviceSpec(
                            container_path=spec.container_path,
                            host_path=spec.host_path,
                            permissions=spec.permissions,
                        )
                    ]
                )
            )
        self._metrics.allocations.labels(resource).inc(len(responses))
        return api.AllocateResponse(container_responses=responses)

    async def PreStartContainer(
        self, request: api.PreStartContainerRequest, context: grpc.aio.ServicerContext
    ) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()


def add_to_server(servicer: DevicePluginServicer, server: Any) -> None:
    """Register the servicer's methods with a `grpc.aio.Server`."""
    from agent.v1beta1 import api_pb2_grpc

    api_pb2_grpc.add_DevicePluginServicer_to_server(servicer, server)
