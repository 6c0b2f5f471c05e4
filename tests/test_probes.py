"""The plain-HTTP probe port, over a real socket."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import CollectorRegistry, Counter

from virtdev import probes
from virtdev.probes import ProbeServer


async def get(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_probe_endpoints() -> None:
    registry = CollectorRegistry()
    Counter("virtdev_example", "an example", registry=registry).inc(3)
    state = {"ready": False}
    server = ProbeServer(
        host="127.0.0.1",
        port=0,
        registry=registry,
        ready=lambda: (state["ready"], "ready" if state["ready"] else "kvm: not registered"),
    )
    await server.start()
    try:
        port = server.port
        assert await get(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == (200, b"ok\n")
        assert await get(port, b"GET /livez HTTP/1.1\r\n\r\n") == (200, b"ok\n")
        assert await get(port, b"GET /readyz HTTP/1.1\r\n\r\n") == (503, b"kvm: not registered\n")
        state["ready"] = True
        assert await get(port, b"GET /readyz?verbose HTTP/1.1\r\n\r\n") == (200, b"ready\n")
        status, body = await get(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status == 200 and b"virtdev_example_total 3.0" in body
        assert b"\nprocess_start_time_seconds " in body and b"\nvirtdev_build_info{" in body
        assert (await get(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await get(port, b"POST /healthz HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await get(port, b"garbage\r\n\r\n"))[0] == 400
        status, body = await get(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"")
    finally:
        await server.stop()


async def test_a_flood_is_closed_at_once_beyond_the_limit_and_slow_heads_by_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any peer may reach the probe port: 16 connections at most, each head within its deadline;
    probes are answered again as soon as the flood is gone."""
    monkeypatch.setattr(probes, "HEAD_SECONDS", 0.5)
    server = ProbeServer(
        host="127.0.0.1", port=0, registry=CollectorRegistry(), ready=lambda: (True, "ready")
    )
    await server.start()
    held: list[asyncio.StreamWriter] = []
    try:
        readers = []
        for _ in range(probes.MAX_CONNECTIONS):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\n")  # a head never finished
            held.append(writer)
            readers.append(reader)
        loop = asyncio.get_running_loop()
        started = loop.time()
        extra_reader, extra = await asyncio.open_connection("127.0.0.1", server.port)
        held.append(extra)
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(extra_reader.read(), timeout=10) == b""
        assert loop.time() - started < 0.4, "closed at once, not by the deadline"
        for reader in readers:  # each slow head is closed by its deadline, unanswered
            assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        assert loop.time() - started < 0.5 + 2
        assert await get(server.port, b"GET /healthz HTTP/1.1\r\n\r\n") == (200, b"ok\n")
    finally:
        for writer in held:
            writer.close()
        await server.stop()
