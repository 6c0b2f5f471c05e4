"""The plain-HTTP port of every virtdev process: `/livez`, `/healthz`, `/readyz` and `/metrics`.

Kubelet probes and Prometheus must work whatever the TLS settings of the webhook, and the agent
has no HTTP server of its own, so both use this small asyncio server instead of a framework: it
costs the agent on every node almost no memory, and it answers even while the main port is busy.

Any peer may reach it, so it is bounded like the HTTPS port: one request per connection, its
head within `HEAD_SECONDS` and `_MAX_REQUEST_HEAD` bytes, the answer written within
`HEAD_SECONDS`, and at most `MAX_CONNECTIONS` at once (more are closed at once): a flood
neither holds memory nor takes the files the webhook keeps free (`webhook.serving.connections`).

`/livez` is the API server's own name for liveness, `/healthz` the older one; both say the
process answers. `/metrics` serves the process's own registry and, for every process alike, the
process collector's `process_*` (resident memory, start time, CPU, open files: restarts and
memory alerts) and `virtdev_build_info{version,python_version} 1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from virtdev import __version__

log = logging.getLogger(__name__)


class BuildInfo:
    """`virtdev_build_info{version,python_version} 1`: which build runs where, for dashboards."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "virtdev_build_info",
            "Always 1; the labels say which virtdev build this process runs.",
            labels=["version", "python_version"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info


def process_registry() -> CollectorRegistry:
    """What every virtdev process exposes beside its own metrics (one per process)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(BuildInfo())
    return registry


_PROCESS = process_registry()

#: A readiness check answers (ready, reason); the reason is shown to whoever curls /readyz.
ReadyCheck = Callable[[], tuple[bool, str]]

_MAX_REQUEST_HEAD = 8192
#: The kubelet probes one at a time and Prometheus scrapes one at a time; room for a few more.
MAX_CONNECTIONS = 16
HEAD_SECONDS = 5.0


class ProbeServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: ReadyCheck,
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._ready = ready
        self._server: asyncio.Server | None = None
        self._open = 0

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info(
            "probe and metrics server listening", extra={"host": self._host, "port": self.port}
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1)
            self._server = None

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """What to answer to one request: pure apart from reading the metrics and readiness."""
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if path in ("/livez", "/healthz"):
            return 200, "text/plain; charset=utf-8", b"ok\n"
        if path == "/readyz":
            ready, reason = self._ready()
            body = (reason or ("ready" if ready else "not ready")).encode() + b"\n"
            return (200 if ready else 503), "text/plain; charset=utf-8", body
        if path == "/metrics":
            body = generate_latest(self._registry) + generate_latest(_PROCESS)
            return 200, CONTENT_TYPE_LATEST, body
        return (
            404,
            "text/plain; charset=utf-8",
            b"not found: try /livez, /healthz, /readyz or /metrics\n",
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.transport.abort()  # at once, without a FIN handshake to wait for
            return
        self._open += 1
        try:
            await self._answer(reader, writer)
        finally:
            self._open -= 1

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=HEAD_SECONDS)
            if len(head) > _MAX_REQUEST_HEAD:
                raise ValueError("request head too large")
            method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            status, content_type, body = self.respond(method, path)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        except ValueError:
            status, content_type, body = 400, "text/plain; charset=utf-8", b"bad request\n"
            method = "GET"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
            status, "Service Unavailable"
        )
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        if method != "HEAD":
            writer.write(body)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.drain(), timeout=HEAD_SECONDS)  # a peer that never reads
        if writer.transport.get_write_buffer_size():
            writer.transport.abort()
        else:
            writer.close()
