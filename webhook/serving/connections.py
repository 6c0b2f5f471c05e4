"""The HTTPS port's connections: how many may be open, and how long each may take to ask.

`/validate` fails closed, so a client that stalls the webhook refuses launcher pods cluster-wide.
uvicorn alone bounds too little for that: its `limit_concurrency` answers 503 only once a request
head has been read (a client that never sends one keeps its socket), a TLS handshake may take
60 s, a half-sent head or body is never timed out, and httptools puts no bound on a head's size.
So the webhook owns its listening socket and its HTTP protocol:

- `Listener` accepts in its own loop and counts every connection from accept to close, TLS
  handshake included. Beyond `max_connections` a connection is reset at once: the client learns
  in microseconds, the file descriptor is free again at once. So is one beyond its peer
  address's share (`ConnectionLimits.per_peer`, half): one client that hoards connections
  leaves the other half to the API server.
- `fit_to_file_limit` lowers `max_connections` to the process's open-file limit less
  `FILES_KEPT`, so a flood never takes the files the certificate reload, the probe port, the node
  watch and the logs need (it made reloads fail with "Too many open files").
- `GuardedHttp` is uvicorn's httptools protocol with deadlines: the TLS handshake and then each
  request head within `head_seconds` (counted from its first byte, or from the connection's
  start), the body within `body_seconds` of its head. A late request is answered 408 and closed;
  a head over `MAX_HEAD_BYTES` 431 and closed; an idle keep-alive connection is closed after
  `KEEP_ALIVE_SECONDS` (uvicorn's own timer). Every close, however the peer behaves, is done
  within `CLOSE_SECONDS` (the TLS close_notify wait is cut short). So a client that stops
  reading its answer is dropped too: the endpoint writes an answer in one piece, which the
  transport buffers, so it never waits on the client, and the connection, idle from then on,
  is closed by the keep-alive timer.

Bytes of bodies held at once across all requests are the endpoints' business
(`webhook.serving.endpoint.BodyBudget`): only they know which bodies are read and when they are
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from webhook.options import DEFAULT_BODY_SECONDS, DEFAULT_HEAD_SECONDS, DEFAULT_MAX_CONNECTIONS
from webhook.serving.endpoint import status_body

log = logging.getLogger("virtdev.webhook")

#: uvicorn's default; Go's HTTP client (the API server's) opens a new connection when one closed.
KEEP_ALIVE_SECONDS = 5
#: The API server's heads are well under 4 KiB; Go's own server allows 1 MiB, nginx 8 KiB lines.
MAX_HEAD_BYTES = 64 * 1024
#: Files kept free of connections: certificate reload (3 files, then OpenSSL reading them again),
#: the probe port (`virtdev.probes.MAX_CONNECTIONS`), the node watch, logs, the event loop's own.
FILES_KEPT = 64
MIN_CONNECTIONS = 8
#: A close waits this long for the peer's TLS close_notify, then the socket is dropped.
CLOSE_SECONDS = 2.0
#: accept() failing for want of resources: wait this long before the next try.
ACCEPT_BACKOFF_SECONDS = 0.1
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: Why the server closed a connection before answering it (the metric's label values).
SHED_REASONS = (
    "limit",
    "peer_limit",
    "handshake",
    "head_timeout",
    "body_timeout",
    "head_too_large",
    "accept_error",
)


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    head_seconds: float = DEFAULT_HEAD_SECONDS
    body_seconds: float = DEFAULT_BODY_SECONDS

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max-connections must be at least 1, got {self.max_connections}")
        for name in ("head_seconds", "body_seconds"):
            if not getattr(self, name) > 0:  # NaN too
                flag = name.replace("_seconds", "-timeout").replace("_", "-")
                raise ValueError(f"{flag} must be a positive number of seconds")

    @property
    def per_peer(self) -> int:
        """Connections one peer address may hold at once: half of them.

        Half, because the API server reaches the webhook from few addresses, often one (its
        host, a konnectivity or egress proxy, a node's SNAT): its share must hold every call it
        makes at once, one connection each. Those are bounded by its requests in flight: 600 of
        every kind by default (--max-requests-inflight 400 plus --max-mutating-requests-inflight
        200), shared out among priority levels by API Priority and Fairness, of which pod
        creations get one level's share: under 500 of the default 1000. And any one other peer,
        however many it opens, leaves the other half free for the API server. What this does
        not do: several hoarding addresses together take every slot, and one behind the API
        server's own address shares its half. Only keeping others from the port answers those:
        manifests/base/network-policies.yaml cannot name the API server portably and admits the
        port from anywhere; a cluster that knows its API server's addresses can narrow it.
        (--client-ca refuses them only after the TLS handshake, which holds a slot for up to
        --head-timeout.)
        """
        return max(1, self.max_connections // 2)


def fit_to_file_limit(wanted: int, *, soft_limit: int | None = None) -> int:
    """`wanted` connections, or fewer to leave `FILES_KEPT` files of the process's limit free."""
    if soft_limit is None:
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == resource.RLIM_INFINITY:
        return wanted
    room = soft_limit - FILES_KEPT
    if room < MIN_CONNECTIONS:
        raise ValueError(
            f"the open-file limit ({soft_limit}) leaves room for {max(room, 0)} connections; "
            f"raise it (ulimit -n) to at least {FILES_KEPT + MIN_CONNECTIONS}"
        )
    return min(wanted, room)


class ConnectionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.open = Gauge(
            "virtdev_webhook_connections",
            "Connections open on the HTTPS port, TLS handshakes included",
            registry=registry,
        )
        self.limit = Gauge(
            "virtdev_webhook_connections_limit",
            "Connections the HTTPS port keeps open at most (--max-connections, fitted to the "
            "open-file limit)",
            registry=registry,
        )
        self.shed = Counter(
            "virtdev_webhook_connections_shed",
            "Connections closed by the server before an answer, by reason: limit (over the "
            "connection limit), peer_limit (over one peer address's share, half of the limit), "
            "handshake (TLS failed or too slow), head_timeout, body_timeout, head_too_large; "
            "accept_error counts failed accepts (out of files or memory)",
            ["reason"],
            registry=registry,
        )
        for reason in SHED_REASONS:
            self.shed.labels(reason=reason)

    def count_shed(self, reason: str) -> None:
        self.shed.labels(reason=reason).inc()


class _Slot:
    """One counted connection; released exactly once, however it ends."""

    __slots__ = ("_listener", "_held", "_peer")

    def __init__(self, listener: Listener, peer: str) -> None:
        self._listener = listener
        self._held = True
        self._peer = peer

    def release(self) -> None:
        if self._held:
            self._held = False
            self._listener._released(self._peer)


#: Makes the HTTP protocol of one connection; its argument releases the connection's slot.
ProtocolFactory = Callable[[Callable[[], None]], asyncio.Protocol]


class Listener:
    """The accept loop of the HTTPS port (in uvicorn's `servers` list: close, wait_closed)."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: ProtocolFactory,
        *,
        tls: ssl.SSLContext | None,
        limits: ConnectionLimits,
        metrics: ConnectionMetrics,
    ) -> None:
        self.sockets = [sock]
        self._sock = sock
        self._protocol = protocol
        self._tls = tls
        self._limits = limits
        self._metrics = metrics
        self.open = 0
        #: Open connections by peer address (only addresses with one or more).
        self.by_peer: dict[str, int] = {}
        self._handshakes: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._accept_failing = False
        metrics.limit.set(limits.max_connections)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in self._handshakes:
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        tasks = [*self._handshakes, *([self._task] if self._task else [])]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _released(self, peer: str) -> None:
        self.open -= 1
        self._metrics.open.set(self.open)
        held = self.by_peer[peer] - 1
        if held:
            self.by_peer[peer] = held
        else:
            del self.by_peer[peer]

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(self._sock)
            except OSError as error:
                if error.errno not in _RESOURCE_ERRORS:
                    if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EAGAIN):
                        continue  # the peer gave up while queued: nothing to do
                    raise
                self._metrics.count_shed("accept_error")
                if not self._accept_failing:  # once per spell, not per try
                    log.error("cannot accept connections: %s; retrying", error.strerror)
                self._accept_failing = True
                await asyncio.sleep(ACCEPT_BACKOFF_SECONDS)
                continue
            self._accept_failing = False
            if self.open >= self._limits.max_connections:
                _reset(conn)
                self._metrics.count_shed("limit")
                continue
            # The address, not the port: one client opens many ports. (IPv6 too: a pod gets
            # one address, not a prefix, from which it may connect.)
            peer = address[0] if isinstance(address, tuple) else ""
            held = self.by_peer.get(peer, 0)
            if held >= self._limits.per_peer:
                _reset(conn)
                self._metrics.count_shed("peer_limit")
                continue
            self.by_peer[peer] = held + 1
            self.open += 1
            self._metrics.open.set(self.open)
            task = loop.create_task(self._handshake(conn, _Slot(self, peer)))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, slot: _Slot) -> None:
        """Hand the socket to the loop's TLS transport; the slot is released when it closes."""
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        extra: dict[str, Any] = {}
        if self._tls is not None:
            extra = {
                "ssl": self._tls,
                "ssl_handshake_timeout": self._limits.head_seconds,
                "ssl_shutdown_timeout": CLOSE_SECONDS,
            }
        try:
            # From here the transport owns the socket and closes it on every path.
            await loop.connect_accepted_socket(lambda: self._protocol(slot.release), conn, **extra)
        except asyncio.CancelledError:
            slot.release()
            raise
        except Exception as error:  # a failed or slow handshake: the client's problem
            slot.release()
            self._metrics.count_shed("handshake")
            log.debug("TLS handshake failed: %s", error)


def _reset(conn: socket.socket) -> None:
    """Close with a TCP reset: no FIN_WAIT/TIME_WAIT kept, the client told at once."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each head and body and a head size cap.

    The timer runs only while the server waits for the client: from the connection's start (or
    a head's first byte) to the end of the head, then to the end of the body. Idle time between
    requests is uvicorn's keep-alive timer's.
    """

    def __init__(
        self,
        *args: Any,
        limits: ConnectionLimits,
        release: Callable[[], None],
        count_shed: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._release = release
        self._count_shed = count_shed
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._awaiting_head = True
        self._refused = False

    # --- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self._limits.head_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        try:
            super().connection_lost(exc)
        finally:
            self._release()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered and closing: whatever else arrives is dropped
            return
        awaiting_head = self._awaiting_head
        super().data_received(data)
        # httptools keeps an unfinished head (even one header value) in memory: count what
        # arrives while a head is unfinished, and refuse as soon as it is too much, not when
        # (if ever) the head ends. A chunk that ends a head is not counted, so nothing here
        # is counted that is not head.
        if awaiting_head and self._awaiting_head and not self._refused:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                message = f"request head exceeds {MAX_HEAD_BYTES} bytes"
                self._refuse(431, "RequestHeaderFieldsTooLarge", message, "head_too_large")

    # --- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection's next request: its first byte
            self._arm("head", self._limits.head_seconds)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        self._arm("body", self._limits.body_seconds)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaiting_head = True
        self._disarm()
        super().on_message_complete()

    # --- deadlines ----------------------------------------------------------------------

    def _arm(self, part: Literal["head", "body"], seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._late, part, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self, part: Literal["head", "body"], seconds: float) -> None:
        self._deadline = None
        message = f"request {part} not received within {seconds:g} s"
        self._refuse(408, "Timeout", message, f"{part}_timeout")

    def _refuse(self, status: int, reason: str, message: str, why: str) -> None:
        """Answer `status` (unless an answer was begun) and close; the app, if any, is told the
        client is gone, so it neither answers nor keeps waiting for the body."""
        if self.transport.is_closing():
            return
        self._refused = True
        self._disarm()
        self._count_shed(why)
        answered = False
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            answered = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
        if not answered:
            body = status_body(status, reason, message)
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
            )
        self.transport.close()
