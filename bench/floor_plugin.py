"""The floor for the agent benchmark: the least a grpcio device plugin can be.

It imports only grpc, the generated stubs and the standard library (inotify through ctypes),
yet does the same job as the agent for kvm, tun and vhost-net: serves each resource on its own
socket, registers after serving, re-serves and re-registers when its socket is removed (kubelet
restart), and sends a new device list when the device node vanishes or comes back. No
metrics, no logs, no config, no stale-socket or KubeVirt checks: what the agent adds to this
is what the benchmark prices.

usage: python bench/floor_plugin.py PLUGIN_DIR HOST_ROOT [DEVICE_COUNT]
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import stat
import struct
import sys

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agent.v1beta1 import api_pb2 as api
from agent.v1beta1 import api_pb2_grpc

DEVICES = {"kvm": "/dev/kvm", "tun": "/dev/net/tun", "vhost-net": "/dev/vhost-net"}
IN_ATTRIB, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x4, 0x40, 0x80, 0x100, 0x200
IN_NONBLOCK = 0o4000
_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    def __init__(self, directory: str) -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK)
        mask = IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        _libc.inotify_add_watch(self.fd, directory.encode(), mask)
        self.ready = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self.ready.set)

    async def names(self) -> set[str]:
        await self.ready.wait()
        self.ready.clear()
        names: set[str] = set()
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return names
        offset = 0
        while offset < len(data):
            _, _, _, length = struct.unpack_from("iIII", data, offset)
            raw = data[offset + 16 : offset + 16 + length]
            names.add(raw.rstrip(b"\0").decode())
            offset += 16 + length
        return names


# The generated module is outside mypy's view (pyproject.toml excludes *_pb2*.py).
class Plugin(api_pb2_grpc.DevicePluginServicer):  # type: ignore[misc,name-defined]
    def __init__(self, name: str, path: str, count: int) -> None:
        self.name, self.path = name, path
        self.ids = [f"{name}-{i:03d}" for i in range(count)]
        self.health = self.check()
        self.changed = asyncio.Event()

    def check(self) -> str:
        try:
            return "Healthy" if stat.S_ISCHR(os.stat(self.path).st_mode) else "Unhealthy"
        except OSError:
            return "Unhealthy"

    async def watch_health(self) -> None:
        watch = Inotify(os.path.dirname(self.path))
        while True:
            health = self.check()
            if health != self.health:
                self.health = health
                self.changed.set()
            await watch.names()

    async def GetDevicePluginOptions(self, request, context):  # type: ignore[no-untyped-def]
        return api.DevicePluginOptions()

    async def ListAndWatch(self, request, context):  # type: ignore[no-untyped-def]
        while True:
            self.changed.clear()
            yield api.ListAndWatchResponse(
                devices=[api.Device(ID=i, health=self.health) for i in self.ids]
            )
            await self.changed.wait()

    async def Allocate(self, request, context):  # type: ignore[no-untyped-def]
        spec = api.DeviceSpec(container_path=DEVICES[self.name], host_path=DEVICES[self.name])
        spec.permissions = "rw"
        return api.AllocateResponse(
            container_responses=[
                api.ContainerAllocateResponse(devices=[spec]) for _ in request.container_requests
            ]
        )


async def serve(plugin_dir: str, name: str, plugin: Plugin) -> None:
    sock = os.path.join(plugin_dir, f"floor-{name}.sock")
    watch = Inotify(plugin_dir)
    delays = iter((1, 2, 5, 10))
    while True:
        server = grpc.aio.server()
        api_pb2_grpc.add_DevicePluginServicer_to_server(plugin, server)
        server.add_insecure_port(f"unix:{sock}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(
                f"unix:{os.path.join(plugin_dir, 'kubelet.sock')}",
                options=[
                    ("grpc.use_local_subchannel_pool", 1),
                    ("grpc.initial_reconnect_backoff_ms", 50),
                    ("grpc.min_reconnect_backoff_ms", 50),
                    ("grpc.max_reconnect_backoff_ms", 500),
                ],
            ) as channel:
                await api_pb2_grpc.RegistrationStub(channel).Register(
                    api.RegisterRequest(
                        version="v1beta1",
                        endpoint=os.path.basename(sock),
                        resource_name=f"devices.kubevirt.io/{name}",
                    ),
                    timeout=15,
                    wait_for_ready=True,
                )
            delays = iter((1, 2, 5, 10))
            while os.path.exists(sock):
                await watch.names()
        except grpc.aio.AioRpcError:
            await asyncio.sleep(next(delays, 10))
        finally:
            await server.stop(0)


async def main() -> None:
    plugin_dir, host_root = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    tasks = []
    for name, path in DEVICES.items():
        plugin = Plugin(name, os.path.join(host_root, path.lstrip("/")), count)
        tasks.append(asyncio.ensure_future(plugin.watch_health()))
        tasks.append(asyncio.ensure_future(serve(plugin_dir, name, plugin)))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
