"""Slow and many clients against the real `virtdev webhook` process over real TLS.

`/validate` fails closed, so a client that stalls the webhook refuses launcher pods: every way of
holding a connection is closed by a deadline (408 where a request was begun), connections over
the limit are reset at once, and so are those over one peer address's share (the others' reviews
are answered meanwhile), large bodies beyond the process-wide budget are refused with 503
while small reviews keep being answered, and at a 256-file limit a flood of 300 clients is shed
while a certificate reload that falls due meanwhile still takes effect. Clients connect from
several loopback addresses (127.0.0.2, …) to be several peers.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from cryptography import x509

from certs import pki
from tests.support import eventually, run_webhook
from tests.webhook.conftest import fixture_bytes
from tests.webhook.serving.test_e2e import Webhook, start_webhook
from webhook.serving.connections import (
    CLOSE_SECONDS,
    FILES_KEPT,
    KEEP_ALIVE_SECONDS,
    MAX_HEAD_BYTES,
    fit_to_file_limit,
)

pytestmark = pytest.mark.slow

HEAD_SECONDS = 1.0
BODY_SECONDS = 1.0
MAX_CONNECTIONS = 16
MAX_BODY_BYTES = 1024 * 1024
REVIEW = fixture_bytes("v1-launcher-2018-privileged.json")


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    server = start_webhook(
        tmp_path_factory.mktemp("connections"),
        "--head-timeout", str(HEAD_SECONDS), "--body-timeout", str(BODY_SECONDS),
        "--max-connections", str(MAX_CONNECTIONS),
        "--max-body-bytes", str(MAX_BODY_BYTES), "--max-buffered-bytes", str(MAX_BODY_BYTES),
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


def context(server: Webhook) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_cert))


@contextlib.contextmanager
def connected(
    server: Webhook, *, tls: bool = True, peer: str = "127.0.0.1"
) -> Iterator[socket.socket]:
    """A connection from the loopback address `peer` (all of 127/8 is this machine's)."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30, source_address=(peer, 0))
    try:
        if not tls:
            yield raw
            return
        with context(server).wrap_socket(raw, server_hostname="localhost") as conn:
            yield conn
    finally:
        raw.close()


def until_closed(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def head(path: str = "/validate", length: int | None = None, extra: str = "") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"{size}{extra}\r\n"
    ).encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def status_message(response: bytes) -> str:
    message: str = orjson.loads(response.partition(b"\r\n\r\n")[2])["message"]
    return message


def review_in_time(server: Webhook, seconds: float = 1.0, peer: str = "127.0.0.1") -> None:
    """A normal review, over a fresh connection, answered 200 within `seconds`."""
    started = time.monotonic()
    with connected(server, peer=peer) as conn:
        conn.sendall(head("/mutate", len(REVIEW), "Connection: close\r\n") + REVIEW)
        response = until_closed(conn)
    elapsed = time.monotonic() - started
    assert status_of(response) == 200, response[:300]
    assert b'"patchType":"JSONPatch"' in response
    assert elapsed < seconds, f"normal review took {elapsed:.2f} s"


def closed_after(conn: socket.socket) -> tuple[bytes, float]:
    started = time.monotonic()
    response = until_closed(conn)
    return response, time.monotonic() - started


# --- deadlines ----------------------------------------------------------------------------


def test_a_half_sent_head_is_answered_408_and_closed_by_the_head_deadline(
    webhook: Webhook,
) -> None:
    with connected(webhook) as conn:
        conn.sendall(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        response, elapsed = closed_after(conn)
    assert status_of(response) == 408, response
    assert "request head not received within 1 s" in status_message(response)
    assert elapsed < HEAD_SECONDS + 2


def test_a_connection_that_never_sends_a_request_is_answered_408_and_closed(
    webhook: Webhook,
) -> None:
    with connected(webhook) as conn:
        response, elapsed = closed_after(conn)
    assert status_of(response) == 408, response
    assert elapsed < HEAD_SECONDS + 2


def test_a_client_that_never_starts_tls_is_closed_by_the_head_deadline(webhook: Webhook) -> None:
    with connected(webhook, tls=False) as conn:
        response, elapsed = closed_after(conn)
    assert response == b""
    assert HEAD_SECONDS - 0.2 < elapsed < HEAD_SECONDS + 2


def test_a_half_sent_body_is_answered_408_and_closed_by_the_body_deadline(
    webhook: Webhook,
) -> None:
    with connected(webhook) as conn:
        conn.sendall(head(length=len(REVIEW)) + REVIEW[:100])
        response, elapsed = closed_after(conn)
    assert status_of(response) == 408, response
    assert "request body not received within 1 s" in status_message(response)
    assert elapsed < BODY_SECONDS + 2
    webhook.sent["validate"] += 1  # the endpoint saw it: counted as client_gone
    assert 'verdict="client_gone"' in webhook.probe("/metrics")[1]


def test_a_head_dribbled_a_byte_at_a_time_is_cut_by_its_deadline_not_per_byte(
    webhook: Webhook,
) -> None:
    """The deadline runs from the head's first byte: bytes arriving keep nothing alive."""
    with connected(webhook) as conn:
        started = time.monotonic()
        conn.sendall(b"POST /validate HTTP/1.1\r\n")
        for _ in range(int(HEAD_SECONDS * 20) * 3):  # for three deadlines' time at most
            conn.sendall(b"X")
            # One header byte every 50 ms, until the server answers.
            if select.select([conn], [], [], 0.05)[0]:
                break
        response = until_closed(conn)
        elapsed = time.monotonic() - started
    assert status_of(response) == 408, response
    assert elapsed < HEAD_SECONDS + 2


def test_an_idle_keep_alive_connection_is_closed_after_five_seconds(webhook: Webhook) -> None:
    with connected(webhook) as conn:
        conn.sendall(head("/mutate", len(REVIEW)) + REVIEW)
        first = conn.recv(65536)
        assert status_of(first) == 200
        response, elapsed = closed_after(conn)
    assert b"HTTP/1.1" not in response, "an idle connection is closed without an answer"
    assert 4 < elapsed < 8


def test_a_head_over_64_kib_is_answered_431_before_it_ends(webhook: Webhook) -> None:
    with connected(webhook) as conn:
        conn.sendall(b"POST /validate HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1024))
        response, elapsed = closed_after(conn)
    assert status_of(response) == 431, response
    assert elapsed < HEAD_SECONDS, "refused when the size is passed, not at the deadline"
    webhook.review("/mutate", orjson.loads(REVIEW))


# --- how many --------------------------------------------------------------------------------


def metric(server: Webhook, name: str) -> float:
    """One sample (name with labels, as exposed); 0 for a labelled counter not yet counted."""
    text = server.probe("/metrics")[1]
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_connections_over_the_limit_are_reset_at_once_and_served_again_once_freed(
    webhook: Webhook,
) -> None:
    eventually(lambda: metric(webhook, "virtdev_webhook_connections") == 0, "no connections")
    shed = 'virtdev_webhook_connections_shed_total{reason="limit"}'
    before = metric(webhook, shed)
    with contextlib.ExitStack() as held:
        for number in range(MAX_CONNECTIONS):  # two peers, each within its share
            held.enter_context(connected(webhook, tls=False, peer=f"127.0.0.{2 + number % 2}"))
        eventually(
            lambda: metric(webhook, "virtdev_webhook_connections") == MAX_CONNECTIONS, "all held"
        )
        started = time.monotonic()
        # Plain TCP: the reset comes before any TLS. (Python 3.11's wrap_socket leaks its
        # SSLSocket when the peer resets before the handshake: a ResourceWarning at some GC.)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            with connected(webhook, tls=False) as extra:
                extra.sendall(b"\x16\x03\x01\x00\x05hello")  # the start of a ClientHello
                assert extra.recv(65536) == b"", "no answer over the limit"
                raise ConnectionResetError("closed without an answer")
        assert time.monotonic() - started < 0.5, "refused at once"
        assert metric(webhook, shed) == before + 1
    eventually(lambda: metric(webhook, "virtdev_webhook_connections") == 0, "all freed")
    review_in_time(webhook)


PER_PEER = MAX_CONNECTIONS // 2


def test_one_peer_holds_half_the_connections_at_most_and_another_peers_review_is_answered(
    webhook: Webhook,
) -> None:
    """The issue's hoarder: idle connections from one address, as many as it can open. Its
    connections past half the limit are reset at once; a review from another address (the API
    server's) is answered meanwhile, and the hoarder may connect again once it closes one."""
    eventually(lambda: metric(webhook, "virtdev_webhook_connections") == 0, "no connections")
    shed = 'virtdev_webhook_connections_shed_total{reason="peer_limit"}'
    before = metric(webhook, shed)
    hoarder = "127.0.0.4"
    with contextlib.ExitStack() as held:
        kept = [held.enter_context(connected(webhook, tls=False, peer=hoarder))]
        kept += [
            held.enter_context(connected(webhook, tls=False, peer=hoarder))
            for _ in range(PER_PEER - 1)
        ]
        eventually(lambda: metric(webhook, "virtdev_webhook_connections") == PER_PEER, "held")
        for _ in range(PER_PEER):  # as many again: every one reset at once
            started = time.monotonic()
            # The reset may come before connect() returns, or after.
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                with connected(webhook, tls=False, peer=hoarder) as extra:
                    extra.sendall(b"\x16\x03\x01\x00\x05hello")  # a ClientHello's start
                    assert until_closed(extra) == b"", "no answer over the share"
            assert time.monotonic() - started < 0.5, "refused at once"
        assert metric(webhook, shed) == before + PER_PEER
        assert metric(webhook, "virtdev_webhook_connections") == PER_PEER
        review_in_time(webhook)  # from 127.0.0.1
        kept[0].close()
        eventually(lambda: metric(webhook, "virtdev_webhook_connections") == PER_PEER - 1, "one")
        review_in_time(webhook, peer=hoarder)  # its freed slot is its own again
    assert metric(webhook, shed) == before + PER_PEER


def test_large_bodies_beyond_the_budget_are_refused_503_while_small_reviews_are_answered(
    webhook: Webhook,
) -> None:
    """The budget (--max-buffered-bytes) is 1 MiB: one large body held, a second refused at
    once and its connection closed; the held one, finished, is answered."""
    large = 900 * 1024
    with connected(webhook) as holder:
        holder.sendall(head(length=large) + b" " * (large - 10))  # all but the last bytes
        eventually(
            lambda: metric(webhook, "virtdev_webhook_connections") >= 1, "the holder counted"
        )
        # The holder's reservation is taken when its head is read, before its body.
        with connected(webhook) as second:
            second.sendall(head(length=large))
            response, elapsed = closed_after(second)
        assert status_of(response) == 503, response
        assert b"connection: close" in response.lower()
        assert "--max-buffered-bytes" in status_message(response)
        assert elapsed < 1
        review_in_time(webhook)  # small bodies need no share of the budget
        holder.sendall(b" " * 10)
        answer = holder.recv(65536)
    assert status_of(answer) == 400, answer  # spaces are not a review: read and parsed
    webhook.sent["validate"] += 2


# --- at the file limit ------------------------------------------------------------------------


def renew_leaf(certs: Path) -> x509.Certificate:
    """A new serving pair from the dev CA, written key first as the generator writes them."""
    key = pki.load_key((certs / "ca.key").read_bytes())
    assert key is not None
    ca = pki.KeyPair(pki.load_certs((certs / "ca.crt").read_bytes())[0], key)
    leaf = pki.issue_leaf(ca, dns_names=["localhost"], now=datetime.now(UTC), days=30)
    for name, data in (("tls.key", pki.key_pem(leaf.key)), ("tls.crt", pki.cert_pem(leaf.cert))):
        temporary = certs / f".{name}.new"
        temporary.write_bytes(data)
        os.replace(temporary, certs / name)
    return leaf.cert


def presented_serial(server: Webhook) -> int:
    with connected(server) as conn:
        assert isinstance(conn, ssl.SSLSocket)
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)


FILE_LIMIT = 256
SLOW_CLIENTS = 300


def test_300_slow_clients_at_a_256_file_limit_are_shed_and_a_due_reload_takes_effect(
    tmp_path: Path,
) -> None:
    """The clients hold their sockets for the default head deadline (10 s), so the limit is
    still reached when the reload is seen, and all are gone once it has passed."""
    server = start_webhook(
        tmp_path, prefix=["sh", "-c", f'ulimit -n {FILE_LIMIT} && exec "$@"', "sh"]
    )
    shed = "virtdev_webhook_connections_shed_total{reason=%s}"
    connections = "virtdev_webhook_connections"
    try:
        limit = metric(server, "virtdev_webhook_connections_limit")
        assert limit == FILE_LIMIT - FILES_KEPT, "fitted to the file limit"
        before = presented_serial(server)
        with contextlib.ExitStack() as held:
            for number in range(SLOW_CLIENTS):  # plain TCP, never a TLS hello: the slowest
                peer = f"127.0.0.{2 + number % 4}"  # four peers, each under its share (96)
                with contextlib.suppress(ConnectionResetError):  # shed before connect returned
                    held.enter_context(connected(server, tls=False, peer=peer))
            eventually(
                lambda: metric(server, shed % '"limit"') == SLOW_CLIENTS - limit, "all accepted"
            )
            assert metric(server, connections) == limit
            renewed = renew_leaf(server.ca_cert.parent)  # the reload falls due while at the limit
            reloads = 'virtdev_webhook_certificate_reloads_total{result="ok"}'
            eventually(lambda: metric(server, reloads) == 1, "the reload")
            assert metric(server, connections) == limit, "the reload was done at the limit"
            # The slow clients are closed by the handshake deadline, none left waiting.
            eventually(lambda: metric(server, connections) == 0, "all shed")
        assert presented_serial(server) == renewed.serial_number != before
        review_in_time(server)
        assert "Too many open files" not in server.log.read_text()
        assert metric(server, shed % '"handshake"') >= limit
    finally:
        server.stop()


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("soft", "wanted", "fitted"),
    [(1_048_576, 1000, 1000), (1024, 1000, 1024 - FILES_KEPT), (256, 1000, 256 - FILES_KEPT)],
)
def test_the_connection_limit_is_fitted_to_the_open_file_limit(
    soft: int, wanted: int, fitted: int
) -> None:
    assert fit_to_file_limit(wanted, soft_limit=soft) == fitted


def test_a_file_limit_too_low_for_connections_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"open-file limit \(70\) leaves room for 6 connections"):
        fit_to_file_limit(1000, soft_limit=70)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--head-timeout", "0"], "head-timeout must be a positive number of seconds"),
        (["--body-timeout", "nan"], "body-timeout must be a positive number of seconds"),
        (["--max-connections", "0"], "max-connections must be at least 1, got 0"),
        (
            ["--max-buffered-bytes", "1000"],
            "max-buffered-bytes (1000) must be at least max-body-bytes (6291456), or no body "
            "at the limit could be read",
        ),
    ],
)
def test_bad_limits_are_refused_at_start_with_exit_2(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    result = run_webhook("--dev-certs-dir", tmp_path, *flags)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"virtdev webhook: {message}"


def test_limits_come_from_the_config_file_too(tmp_path: Path) -> None:
    config = tmp_path / "virtdev.yaml"
    config.write_text("head-timeout: 0\n")
    result = run_webhook("--config", config, "--dev-certs-dir", tmp_path)
    assert result.returncode == 2, result.stderr
    assert "head-timeout must be a positive number of seconds" in result.stderr


def test_a_client_that_stops_reading_its_answer_is_dropped_after_the_keep_alive_timeout(
    tmp_path: Path,
) -> None:
    """A 7.5 MB patch is more than the kernel's socket buffers take (~4 MB): the rest waits in
    the process. The answer was written in one piece, so the connection is idle from then on:
    closed after 5 s, the TLS goodbye given up after 2 s more."""
    from tests.webhook.serving.test_hostile import enlarged

    server = start_webhook(tmp_path)
    try:
        pod = orjson.loads(REVIEW)["request"]["object"]
        body = enlarged(pod, 6 * 1024 * 1024, how="containers")
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window
        raw.settimeout(30)
        raw.connect(("127.0.0.1", server.port))
        with context(server).wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(head("/mutate", len(body)) + body)
            sent = time.monotonic()
            requests = 'virtdev_webhook_requests_total{endpoint="mutate",verdict="patched"}'
            eventually(lambda: metric(server, requests) == 1, "the answer")
            eventually(lambda: metric(server, "virtdev_webhook_connections") == 0, "dropped")
            assert time.monotonic() - sent < KEEP_ALIVE_SECONDS + CLOSE_SECONDS + 3
        review_in_time(server)
    finally:
        server.stop()


def test_the_flags_defaults_are_the_settings_defaults() -> None:
    """`virtdev webhook` without flags runs with the limits and modes the settings default to."""
    from virtdev.cli import parse
    from webhook.serving.app import WebhookSettings
    from webhook.serving.connections import ConnectionLimits

    args = parse(["webhook"])
    limits, settings = ConnectionLimits(), WebhookSettings()
    assert (args.max_connections, args.head_timeout, args.body_timeout) == (
        limits.max_connections,
        limits.head_seconds,
        limits.body_seconds,
    )
    assert (args.max_body_bytes, args.max_buffered_bytes) == (
        settings.max_body_bytes,
        settings.max_buffered_bytes,
    )
    assert (args.no_kvm_policy, args.enforcement) == (
        settings.no_kvm_policy,
        settings.enforcement,
    )
