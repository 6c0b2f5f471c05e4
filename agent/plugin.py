"""One resource's life with the kubelet: serve, prove the socket answers, Register, watch,
clean up — and all of it again after every kubelet restart.

`run_once` is one such try and fails as a whole when any step fails; `run` repeats it, at once
after a kubelet restart, with backoff (1, 2, 5, 10 s) after a failure, and never gives up. The
device logic lives in `agent.devices`, the wire in `agent.servicer`; this module only sequences.

The plugin directory is watched with inotify for the whole life of the plugin (watch first,
then look). A kubelet restart shows as our socket vanishing or kubelet.sock appearing after we
registered; events only wake the plugin, which then looks at the directory, so its own actions
(creating its socket, removing a stale one) never pass for a kubelet restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Container

import grpc

from agent import sockets
from agent.devices import device_ids
from agent.health import HealthState
from agent.inotify import APPEARED, GONE, Watch
from agent.metrics import AgentMetrics
from agent.servicer import OPTIONS, DevicePluginServicer, add_to_server
from agent.settings import AgentSettings
from agent.v1beta1 import api_pb2 as api
from agent.v1beta1.api_pb2_grpc import DevicePluginStub, RegistrationStub
from virtdev import catalogue
from virtdev.catalogue import Device

log = logging.getLogger(__name__)

BACKOFF = catalogue.RESTART_BACKOFF_SECONDS
KUBEVIRT_STARTED = "KubeVirt's device plugin started serving the resource"
#: The kubelet dials back inside Register with a 10 s deadline; leave it room.
REGISTER_TIMEOUT = 15.0
PROVE_TIMEOUT = 5.0
#: Streams get this long to send their empty list when the server stops.
STOP_GRACE = 0.5
#: gRPC's default first reconnect is 1 s: too slow when a new kubelet.sock has just been bound.
#: And every channel connects anew: with gRPC's global subchannel pool a "new" channel may reuse
#: a connection to a socket file that has since been deleted, proving nothing.
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
]
#: How soon, then how rarely at most, to retry a kubelet.sock that exists but refuses.
KUBELET_RECHECK = (0.05, 1.0)
#: While standing down, how often to re-check that KubeVirt's socket still answers (it may die
#: without removing its file, which inotify cannot tell).
STAND_DOWN_RECHECK = 10.0


class ResourcePlugin:
    def __init__(
        self,
        *,
        device: Device,
        settings: AgentSettings,
        permissions: str,
        health: HealthState,
        metrics: AgentMetrics,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.device = device
        self._on_change = on_change
        self._settings = settings
        self._permissions = permissions
        self._health = health
        self._metrics = metrics
        self._ids = device_ids(device, settings.device_count)
        self._dir = settings.plugin_dir
        self._socket = os.path.join(self._dir, catalogue.plugin_socket(device.name))
        self._kubelet = os.path.join(self._dir, catalogue.KUBELET_SOCKET)
        self._kubevirt_name = catalogue.kubevirt_socket(device.name)
        self._kubevirt = os.path.join(self._dir, self._kubevirt_name)
        self._registered_before = False
        self._stood_down = False
        self.ready = False
        self.status = "starting"
        self._log_extra = {"resource": device.resource}

    # -- the retry loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve and register until cancelled; never returns on its own."""
        with Watch() as watch:
            failures = 0
            while True:
                try:
                    reason = await self.run_once(watch)
                except Exception as error:  # cancellation is a BaseException: it goes through
                    delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                    failures += 1
                    self._metrics.restarts.labels(self.device.resource).inc()
                    self._set_status(f"not registered: {error}; retrying in {delay:g}s")
                    log.warning(
                        "serving or registering failed; retrying",
                        extra={**self._log_extra, "error": str(error), "retry_in": delay},
                    )
                    await self._backoff(watch, delay)
                    continue
                failures = 0
                log.info("serving again", extra={**self._log_extra, "reason": reason})

    async def _backoff(self, watch: Watch, delay: float) -> None:
        """Wait out the delay, cut short when a new kubelet.sock appears."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while (left := deadline - loop.time()) > 0:
            changes = await watch.changes(timeout=left)
            if changes.get(catalogue.KUBELET_SOCKET, 0) & APPEARED:
                return

    # -- one try ----------------------------------------------------------------------------

    async def run_once(self, watch: Watch) -> str:
        """Serve, register and watch; returns why to start over, raises when a step fails."""
        watch.add(self._dir)  # the same watch when it is alive; a new one if the dir was re-made
        await self._wait_for_kubelet(watch)
        if await self._kubevirt_serves():
            if not self._settings.take_over:
                return await self._stand_down(watch)
            log.warning(
                "KubeVirt serves this resource too; --take-over: registering anyway "
                "(the last registration wins)",
                extra={**self._log_extra, "socket": self._kubevirt_name},
            )
        if await sockets.clear_stale(self._socket):
            log.info("removed stale socket", extra={**self._log_extra, "socket": self._socket})
        servicer = DevicePluginServicer(
            device=self.device,
            ids=self._ids,
            permissions=self._permissions,
            health=self._health,
            metrics=self._metrics,
        )
        server = grpc.aio.server()
        add_to_server(servicer, server)
        own: int | None = None
        try:
            server.add_insecure_port(f"unix:{self._socket}")
            await server.start()
            own = sockets.inode(self._socket)
            await self._prove_serving()
            # From here on, a kubelet.sock that appears is a kubelet newer than the one we are
            # about to register with (inode numbers are reused, so names and events decide).
            earlier = watch.drain()
            await self._register()
            if await self._kubevirt_appeared(earlier):
                return self._restart(KUBEVIRT_STARTED)
            return await self._watch(watch, own=own)
        finally:
            self._set_registered(False)
            servicer.close()
            await server.stop(STOP_GRACE)
            if own is not None and sockets.inode(self._socket) == own:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._socket)

    async def _wait_for_kubelet(self, watch: Watch) -> None:
        """Until kubelet.sock answers. Serving earlier would be in vain: a starting kubelet
        deletes every socket in the directory before it serves kubelet.sock."""
        if await sockets.answers(self._kubelet):
            return
        self._set_status(f"waiting for the kubelet to serve {self._kubelet}")
        log.info("waiting for the kubelet", extra={**self._log_extra, "socket": self._kubelet})
        recheck = KUBELET_RECHECK[0]
        while not await sockets.answers(self._kubelet):
            if os.path.exists(self._kubelet):
                # There but refusing: a kubelet between bind and listen, or a dead one whose
                # successor will create the file anew. Look again soon, then less often.
                await self._changes(watch, timeout=recheck)
                recheck = min(recheck * 2, KUBELET_RECHECK[1])
            else:
                await self._changes(watch)  # nothing to connect to: inotify says when it appears

    async def _changes(self, watch: Watch, timeout: float | None = None) -> dict[str, int]:
        """The directory's changes; its own removal ends this try (the watch died with it)."""
        changes = await watch.changes(timeout)
        if changes.get("", 0) & GONE:
            raise RuntimeError(f"device plugin directory {self._dir} was removed")
        return changes

    async def _kubevirt_serves(self) -> bool:
        return await sockets.answers(self._kubevirt)

    async def _stand_down(self, watch: Watch) -> str:
        """Leave the resource to KubeVirt's plugin for as long as its socket answers."""
        self._metrics.standing_down.labels(self.device.resource).set(1)
        self._set_status(
            f"standing down: KubeVirt's device plugin serves {self.device.resource} from "
            f"{self._kubevirt_name}; start with --take-over to replace it"
        )
        if not self._stood_down:
            log.warning(
                "standing down: KubeVirt's device plugin serves this resource",
                extra={**self._log_extra, "socket": self._kubevirt_name},
            )
        self._stood_down = True
        try:
            while await self._kubevirt_serves():
                await self._changes(watch, timeout=STAND_DOWN_RECHECK)
            # Gone, perhaps for a kubelet restart: give virt-handler time to serve again.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._settings.kubevirt_grace
            while (left := deadline - loop.time()) > 0:
                await self._changes(watch, timeout=left)
                if await self._kubevirt_serves():
                    return "KubeVirt's device plugin came back"
        finally:
            self._metrics.standing_down.labels(self.device.resource).set(0)
            self._on_change()
        self._stood_down = False
        return f"KubeVirt's device plugin stopped serving ({self._kubevirt_name} gone)"

    async def _prove_serving(self) -> None:
        """Call our own socket before telling the kubelet about it (kubelet ≥ 1.25 dials back
        inside Register and fails a plugin that is not yet serving)."""
        async with grpc.aio.insecure_channel(
            f"unix:{self._socket}", options=CHANNEL_OPTIONS
        ) as channel:
            await DevicePluginStub(channel).GetDevicePluginOptions(
                api.Empty(), timeout=PROVE_TIMEOUT, wait_for_ready=True
            )

    async def _register(self) -> None:
        request = api.RegisterRequest(
            version=catalogue.DEVICE_PLUGIN_VERSION,
            endpoint=os.path.basename(self._socket),
            resource_name=self.device.resource,
            options=OPTIONS,
        )
        async with grpc.aio.insecure_channel(
            f"unix:{self._kubelet}", options=CHANNEL_OPTIONS
        ) as channel:
            try:
                await RegistrationStub(channel).Register(
                    request, timeout=REGISTER_TIMEOUT, wait_for_ready=True
                )
            except grpc.aio.AioRpcError as error:
                raise RuntimeError(
                    f"kubelet refused registration: {error.code().name}: {error.details()}"
                ) from None
        resource = self.device.resource
        self._metrics.registrations.labels(resource).inc()
        if self._registered_before:
            self._metrics.reregistrations.labels(resource).inc()
        self._registered_before = True
        self._set_registered(True)
        log.info(
            "registered with the kubelet",
            extra={**self._log_extra, "endpoint": request.endpoint, "devices": len(self._ids)},
        )

    def _set_registered(self, registered: bool) -> None:
        self._metrics.registered.labels(self.device.resource).set(1 if registered else 0)
        self.ready = registered
        if registered:
            self._set_status("registered")
        else:
            self._on_change()

    def _set_status(self, status: str) -> None:
        """What /readyz says for this resource; observers (tests, /readyz) learn of it."""
        self.status = status
        self._on_change()

    async def _kubevirt_appeared(self, changed: Container[str]) -> bool:
        """Did KubeVirt's plugin socket change and now answer? (Ignored under --take-over.)"""
        return (
            self._kubevirt_name in changed
            and not self._settings.take_over
            and await self._kubevirt_serves()
        )

    def _restart(self, reason: str) -> str:
        self._set_status(reason)
        log.info(reason, extra=self._log_extra)
        return reason

    async def _watch(self, watch: Watch, *, own: int | None) -> str:
        """Wait until the kubelet restarts or KubeVirt starts serving the resource."""
        while True:
            changes = await self._changes(watch)
            if sockets.inode(self._socket) != own:
                return self._restart("kubelet restarted: socket removed")
            if changes.get(catalogue.KUBELET_SOCKET, 0) & APPEARED and os.path.exists(
                self._kubelet
            ):
                return self._restart("kubelet restarted: kubelet.sock created again")
            if await self._kubevirt_appeared(changes):
                return self._restart(KUBEVIRT_STARTED)
