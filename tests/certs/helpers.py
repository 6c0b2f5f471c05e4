"""Test helpers: a Secret volume laid out as the kubelet does, a real uvicorn server, clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509

from certs.tls import ServingTLS


class SecretVolume:
    """A directory updated as the kubelet updates a Secret volume.

    The visible names (`tls.crt`) are symlinks into `..data/`, and `..data` is itself a symlink
    to a timestamped directory. An update writes a new directory and renames a new `..data`
    link over the old one: one atomic step, and the visible paths' own mtimes never change.
    """

    def __init__(self, root: Path, files: dict[str, bytes]) -> None:
        self.root = root
        self._generation = 0
        root.mkdir(parents=True, exist_ok=True)
        self.publish(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def path(self, name: str) -> Path:
        return self.root / name

    def publish(self, files: dict[str, bytes]) -> None:
        self._generation += 1
        directory = self.root / f"..2030_01_01_00_00_{self._generation:02d}.000000000"
        directory.mkdir()
        for name, data in files.items():
            (directory / name).write_bytes(data)
        link = self.root / "..data_tmp"
        link.symlink_to(directory.name)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        os.replace(link, self.root / "..data")
        if old is not None:
            for child in old.iterdir():
                child.unlink()
            old.rmdir()


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A trivial ASGI app: reads the body, answers 200 with its length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def uvicorn_serving(tls: ServingTLS, *, watch_interval: float | None = None) -> Iterator[int]:
    """Serve the trivial app over `tls.context` in a thread; yields the port.

    The listening socket is bound and listening before the thread starts, so a client may
    connect at once: no waiting for the server to come up.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(_hello, lifespan="off", log_level="warning", loop="asyncio")
    config.load()
    config.ssl = tls.context
    server = uvicorn.Server(config)

    async def main() -> None:
        watcher = asyncio.create_task(tls.watch(watch_interval)) if watch_interval else None
        try:
            await server.serve(sockets=[sock])
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="uvicorn-test")
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the test server did not stop"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    peer: x509.Certificate
    version: str


def client_context(
    ca: Path, *, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def https_post(
    port: int,
    context: ssl.SSLContext,
    *,
    server_hostname: str,
    path: str = "/mutate",
    body: bytes = b"{}",
    timeout: float = 10,
) -> Answer:
    """One POST over a fresh connection, verifying the server as `server_hostname`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            version = tls.version() or ""
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {server_hostname}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            tls.sendall(head + body)
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
    response = b"".join(chunks)
    status_line, _, rest = response.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return Answer(
        int(status_line.split()[1]), payload, x509.load_der_x509_certificate(der), version
    )
