"""Run the webhook process: HTTPS admission port, plain-HTTP probe port, certificate reload.

uvicorn serves the app with the reloadable context of `certs.tls.ServingTLS` (TLS 1.2+), over
the webhook's own listener and protocol (`webhook.serving.connections`: a connection limit fitted
to the open-file limit, deadlines for handshakes, heads and bodies). On SIGTERM the listener stops
accepting, in-flight requests finish, then the probe server stops: a rolling update never drops
an admission call that was already being answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import uvicorn
from prometheus_client import CollectorRegistry

from virtdev import catalogue, logs
from virtdev.probes import ProbeServer
from webhook.nodes.view import NodeView, cluster_source, core_api
from webhook.serving.app import BackgroundTask, WebhookSettings, create_app
from webhook.serving.connections import (
    KEEP_ALIVE_SECONDS,
    ConnectionLimits,
    ConnectionMetrics,
    GuardedHttp,
    Listener,
    fit_to_file_limit,
)
from webhook.serving.metrics import WebhookMetrics

if TYPE_CHECKING:
    from certs.tls import ServingTLS
    from webhook.rules.policy import LauncherPolicy

log = logging.getLogger("virtdev.webhook")

#: Longer than the API server's timeoutSeconds (≤ 3 s): whatever was in flight gets answered.
GRACEFUL_SHUTDOWN_SECONDS = 5
LOCAL_DNS_NAMES = ("localhost",)
LOCAL_IP_ADDRESSES = ("127.0.0.1", "::1")
EXAMPLE_FIXTURE = "tests/fixtures/v1-launcher-2018-privileged.json"


class HttpsServer(uvicorn.Server):
    """uvicorn's server on `webhook.serving.connections`' listener and protocol, telling us once its
    socket is listening, exiting 0 on SIGTERM."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_listening: list[str],
        *,
        limits: ConnectionLimits,
        metrics: ConnectionMetrics,
    ) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self.limits = limits
        self._metrics = metrics
        self.listener: Listener | None = None

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        # uvicorn's startup with our listener in place of `loop.create_server`, whose accept
        # loop counts no handshakes and cannot refuse connections over a limit.
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(uvicorn.config.STARTUP_FAILURE)
        config = self.config
        if not sockets:
            raise TypeError("HttpsServer serves a socket bound by `listen`: serve(sockets=[...])")
        sock = sockets[0]  # bound before anything started, so a port in use is one line
        sock.listen(config.backlog)
        sock.setblocking(False)

        def protocol(release: Callable[[], None]) -> GuardedHttp:
            return GuardedHttp(
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                limits=self.limits,
                release=release,
                count_shed=self._metrics.count_shed,
            )

        self.listener = Listener(
            sock, protocol, tls=config.ssl, limits=self.limits, metrics=self._metrics
        )
        self.listener.start()
        self.servers = [self.listener]  # type: ignore[list-item]  # close() and wait_closed()
        self._log_started_message([sock])
        self.started = True
        for line in self._on_listening:
            print(line, flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after its graceful shutdown, so the process would die
        # of SIGTERM. For a Deployment's pod SIGTERM is the normal end: once every in-flight
        # request is answered, exit 0.
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def uvicorn_config(
    app: Any,
    *,
    host: str,
    port: int,
    tls: ServingTLS,
    lifespan: Literal["on", "off"],
) -> uvicorn.Config:
    """How the HTTPS port is served (the benchmark's floor is served the same way)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        loop="none",  # the caller runs uvloop
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    config.load()
    # uvicorn would build its own SSLContext from files; ServingTLS's reloads without a restart.
    config.ssl = tls.context
    config.ssl_certfile = str(tls.cert_file)  # so uvicorn knows the scheme is https
    return config


class CannotListen(OSError):
    """A port cannot be listened on (in use, not permitted, no such address): one line."""


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cannot_listen(flag: str, host: str, port: int, error: OSError) -> str:
    """`--port: cannot listen on HOST:PORT: address already in use`, as the agent says it."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return f"{flag}: cannot listen on {where(host, port)}: {reason[:1].lower()}{reason[1:]}"


def listen(host: str, port: int) -> socket.socket:
    """The HTTPS port's socket, bound before anything else starts (as uvicorn would bind it),
    so that a port in use is one line and exit 1, not a traceback after "startup complete"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise CannotListen(cannot_listen("--port", host, port, error)) from None
    return sock


def local_material(directory: str) -> tuple[Path, Path, Path]:
    """Throwaway certificates for 127.0.0.1, made (or kept) with the same code as in-cluster."""
    from certs.store import ensure_material

    material = ensure_material(
        Path(directory), dns_names=LOCAL_DNS_NAMES, ip_addresses=LOCAL_IP_ADDRESSES
    )
    return material.ca_cert, material.tls_cert, material.tls_key


def curl_line(ca_cert: Path, host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return (
        f"curl --cacert {ca_cert} -H 'Content-Type: application/json' "
        f"--data @{EXAMPLE_FIXTURE} https://{shown}:{port}{catalogue.MUTATE_PATH}"
    )


def node_view(
    kubeconfig: str | None, metrics: WebhookMetrics, *, node_selector: str = ""
) -> NodeView | None:
    """The watch of nodes, or None (said once) when no cluster is configured."""
    source = cluster_source(kubeconfig)
    if source is None:
        log.info(
            "no cluster configured (no --kubeconfig, not in a pod): launcher pods are patched "
            "without checking which nodes advertise the devices"
        )
        return None
    log.info("watching nodes through the %s", source)
    return NodeView(lambda: core_api(kubeconfig), metrics=metrics, label_selector=node_selector)


def serve(args: argparse.Namespace, policy: LauncherPolicy) -> int:
    logs.setup(args.log_format, args.log_level)
    if bool(args.tls_cert) != bool(args.tls_key):
        print("virtdev webhook: give both --tls-cert and --tls-key, or neither", file=sys.stderr)
        return 2

    from certs.tls import CertificateError, ServingTLS

    ready_lines: list[str] = []
    if args.tls_cert:
        cert, key = Path(args.tls_cert), Path(args.tls_key)
    else:
        try:
            ca_cert, cert, key = local_material(args.dev_certs_dir)
        except (OSError, ValueError) as error:
            print(f"virtdev webhook: cannot make local certificates: {error}", file=sys.stderr)
            return 2
        log.info("no --tls-cert given: serving throwaway local certificates from %s", cert.parent)
        ready_lines.append(
            f"virtdev webhook ready; try:\n  {curl_line(ca_cert, args.host, args.port)}"
        )

    registry = CollectorRegistry()
    metrics = WebhookMetrics.create(registry)
    try:
        tls = ServingTLS(cert, key, client_ca=args.client_ca, registry=registry)
    except CertificateError as error:
        print(f"virtdev webhook: {error}", file=sys.stderr)
        return 2

    try:
        settings = WebhookSettings(
            policy=policy,
            max_body_bytes=args.max_body_bytes,
            no_kvm_policy=args.no_kvm_policy,
            max_buffered_bytes=args.max_buffered_bytes,
            enforcement=args.enforcement,
        )
        limits = ConnectionLimits(
            max_connections=fit_to_file_limit(args.max_connections),
            head_seconds=args.head_timeout,
            body_seconds=args.body_timeout,
        )
    except ValueError as error:
        print(f"virtdev webhook: {error}", file=sys.stderr)
        return 2
    if limits.max_connections < args.max_connections:
        log.info(
            "at most %d connections on the HTTPS port (--max-connections %d), so that the "
            "open-file limit keeps room for certificate reloads, probes and the node watch",
            limits.max_connections,
            args.max_connections,
        )
    view = node_view(args.kubeconfig, metrics, node_selector=args.node_selector)
    background: list[BackgroundTask] = [tls.watch, logs.flush_every]
    if view is not None:
        background.append(view.run)
    app = create_app(
        settings,
        metrics=metrics,
        background=background,
        nodes=None if view is None else view.current,
    )
    config = uvicorn_config(
        app,
        host=args.host,
        port=args.port,
        tls=tls,
        lifespan="on",
    )
    server = HttpsServer(config, ready_lines, limits=limits, metrics=ConnectionMetrics(registry))
    try:
        https_socket = listen(args.host, args.port)
    except CannotListen as error:
        print(f"virtdev webhook: {error}", file=sys.stderr)
        return 1

    def ready() -> tuple[bool, str]:
        if not server.started or server.should_exit:
            return False, "not serving yet" if not server.should_exit else "shutting down"
        return True, "ready"

    probes = ProbeServer(host=args.host, port=args.metrics_port, registry=registry, ready=ready)

    async def main() -> int:
        try:
            await probes.start()
        except OSError as error:
            message = cannot_listen("--metrics-port", args.host, args.metrics_port, error)
            print(f"virtdev webhook: {message}", file=sys.stderr)
            return 1
        try:
            await server.serve(sockets=[https_socket])
        finally:
            await probes.stop()
            logs.flush()
        return 0

    run: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    with contextlib.suppress(ImportError):  # uvloop is a dependency on Linux
        import uvloop

        run = uvloop.run
    with https_socket:
        return run(main())
