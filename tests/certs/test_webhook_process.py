"""End to end with the real `virtdev webhook` process, its certificate files in a Secret-like
volume: handshakes by service name, client certificates, protocol versions, and rotation under
load (the files swapped several times, once to a bad pair, while reviews keep coming)."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from certs import pki
from certs.store import Material
from tests import support
from tests.certs.conftest import (
    DNS_NAMES,
    REPO,
    make_material,
    needs_curl,
    needs_openssl,
)
from tests.certs.helpers import SecretVolume, client_context, https_post
from tests.certs.test_handshake import client_certificate, permissive_server, refused, s_client
from tests.support import (
    WebhookProcess,
    eventually,
    free_port,
    readyz,
    run_webhook,
    running_webhook,
)

pytestmark = pytest.mark.slow

REVIEW = (REPO / "tests" / "fixtures" / "v1-launcher-2018-privileged.json").read_bytes()
SERVICE_NAME = DNS_NAMES[2]  # what the API server verifies: <service>.<namespace>.svc
STARTUP_SECONDS = 60


def pair_files(cert: x509.Certificate, key: object) -> dict[str, bytes]:
    return {"tls.crt": pki.cert_pem(cert), "tls.key": pki.key_pem(key)}  # type: ignore[arg-type]


def ca_of(material: Material) -> pki.KeyPair:
    key = pki.load_key(material.ca_key.read_bytes())
    assert key is not None
    return pki.KeyPair(pki.load_certs(material.ca_cert.read_bytes())[0], key)


def new_leaf(ca: pki.KeyPair) -> pki.KeyPair:
    return pki.issue_leaf(ca, dns_names=DNS_NAMES, now=datetime.now(UTC), days=30)


def sample(metrics: str, name: str) -> float:
    """The value of one sample (name with labels, as exposed) in Prometheus text."""
    value = support.sample(metrics, name)
    assert value is not None, name
    return value


@contextlib.contextmanager
def webhook(volume: SecretVolume, *extra: str | Path) -> Iterator[WebhookProcess]:
    """`virtdev webhook` serving the volume's pair, as the Deployment mounts the Secret."""
    tls = (volume.path("tls.crt"), volume.path("tls.key"))
    with running_webhook(volume.root.parent, *extra, tls=tls) as server:
        yield server


@pytest.fixture
def volume(material: Material, tmp_path: Path) -> SecretVolume:
    files = {"tls.crt": material.tls_cert.read_bytes(), "tls.key": material.tls_key.read_bytes()}
    return SecretVolume(tmp_path / "tls", files)


def test_the_webhook_answers_reviews_by_each_service_name(
    volume: SecretVolume, material: Material
) -> None:
    leaf = pki.load_certs(material.tls_cert.read_bytes())[0]
    with webhook(volume) as hook:
        for name in DNS_NAMES:
            answer = https_post(
                hook.port, client_context(material.ca_cert), server_hostname=name, body=REVIEW
            )
            assert answer.status == 200 and b'"allowed":true' in answer.body
            assert answer.peer == leaf
        assert sample(hook.metrics(), "virtdev_webhook_certificate_expiry_timestamp_seconds") == (
            leaf.not_valid_after_utc.timestamp()
        )


@needs_curl
def test_curl_with_cacert_gets_a_patch_from_the_webhook(
    volume: SecretVolume, material: Material
) -> None:
    with webhook(volume) as hook:
        result = subprocess.run(
            ["curl", "--silent", "--show-error", "--fail", "--cacert", str(material.ca_cert),
             "--resolve", f"{SERVICE_NAME}:{hook.port}:127.0.0.1",
             "-H", "Content-Type: application/json", "--data-binary", "@-",
             f"https://{SERVICE_NAME}:{hook.port}/mutate"],
            input=REVIEW, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert b'"patchType":"JSONPatch"' in result.stdout


@dataclass
class Load:
    """A client that keeps POSTing reviews, each over a fresh connection, until stopped."""

    port: int
    context: ssl.SSLContext
    limit: int = 5000
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    serials: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and self.ok + len(self.failures) < self.limit:
            if time.monotonic() > deadline:
                self.failures.append("ran out of time")
                return
            try:
                answer = https_post(
                    self.port, self.context, server_hostname=SERVICE_NAME, body=REVIEW
                )
            except (OSError, ValueError, IndexError) as error:
                self.failures.append(repr(error))
                continue
            if answer.status != 200 or b'"allowed":true' not in answer.body:
                self.failures.append(f"HTTP {answer.status}: {answer.body[:200]!r}")
                continue
            self.ok += 1
            if not self.serials or self.serials[-1] != answer.peer.serial_number:
                self.serials.append(answer.peer.serial_number)


def presented(port: int, context: ssl.SSLContext) -> int:
    return https_post(port, context, server_hostname=SERVICE_NAME, body=REVIEW).peer.serial_number


FAILED_RELOADS = 'virtdev_webhook_certificate_reloads_total{result="failed"}'
OK_RELOADS = 'virtdev_webhook_certificate_reloads_total{result="ok"}'


def test_rotation_under_load_fails_no_request_and_serves_the_new_pairs(
    volume: SecretVolume, material: Material, other: Material, tmp_path: Path
) -> None:
    first_ca, second_ca = ca_of(material), ca_of(other)
    # The client trusts both CAs, as the caBundle does during a CA rotation.
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(material.ca_cert.read_bytes() + other.ca_cert.read_bytes())
    context = client_context(bundle)
    renewed, stray, next_ca, last = (new_leaf(ca) for ca in (first_ca,) * 2 + (second_ca,) * 2)
    with webhook(volume) as hook:
        load = Load(hook.port, context)
        worker = threading.Thread(target=load.run, name="review-load")
        worker.start()

        def serves(serial: int) -> Callable[[], bool]:
            return lambda: presented(hook.port, context) == serial

        def answered(count: int) -> Callable[[], bool]:
            return lambda: load.ok >= count

        try:
            eventually(answered(20), "the load to be running")
            # 1. the leaf renewed by the same CA
            volume.publish(pair_files(renewed.cert, renewed.key))
            eventually(serves(renewed.cert.serial_number), "the renewed pair")
            eventually(answered(load.ok + 20), "requests on the renewed pair")
            # 2. a bad pair: a certificate with the key of another one
            volume.publish(pair_files(stray.cert, renewed.key))
            eventually(
                lambda: sample(hook.metrics(), FAILED_RELOADS) == 1, "the bad pair to be refused"
            )
            assert presented(hook.port, context) == renewed.cert.serial_number
            eventually(answered(load.ok + 20), "requests after the bad pair")
            # 3. a leaf from the next CA (which the client already trusts), then its renewal
            for step in (next_ca, last):
                volume.publish(pair_files(step.cert, step.key))
                eventually(serves(step.cert.serial_number), "the next pair")
                eventually(answered(load.ok + 20), "requests on the next pair")
        finally:
            load.stop.set()
            worker.join(timeout=60)
        metrics = hook.metrics()

    assert load.failures == [], load.failures[:5]
    assert load.ok >= 100
    original = pki.load_certs(material.tls_cert.read_bytes())[0].serial_number
    expected = [original, renewed.cert.serial_number, next_ca.cert.serial_number]
    expected.append(last.cert.serial_number)
    assert load.serials == expected, "each new pair, in order, and never the bad one"
    assert sample(metrics, OK_RELOADS) == 3
    assert sample(metrics, FAILED_RELOADS) == 1
    assert sample(metrics, "virtdev_webhook_certificate_expiry_timestamp_seconds") == (
        last.cert.not_valid_after_utc.timestamp()
    )


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("other"))


def test_client_ca_on_the_https_port_while_probes_stay_plain(
    volume: SecretVolume, material: Material, tmp_path: Path
) -> None:
    api_server = make_material(tmp_path / "api-ca", dns_names=["unused"])
    cert, key = client_certificate(tmp_path / "client", api_server)
    with webhook(volume, "--client-ca", api_server.ca_cert) as hook:
        with_cert = client_context(material.ca_cert, cert=cert, key=key)
        answer = https_post(hook.port, with_cert, server_hostname=SERVICE_NAME, body=REVIEW)
        assert answer.status == 200
        assert refused(hook.port, client_context(material.ca_cert))
        assert readyz(hook.metrics_port)


@needs_openssl
def test_the_webhook_refuses_tls_1_1_that_a_permissive_server_accepts(
    volume: SecretVolume, material: Material
) -> None:
    with permissive_server(material) as control_port:
        control = s_client(control_port, "-tls1_1", material.ca_cert)
    assert "Protocol version: TLSv1.1\n" in control.stderr, control.stderr
    with webhook(volume) as hook:
        result = s_client(hook.port, "-tls1_1", material.ca_cert)
        assert result.returncode != 0 and "Protocol version" not in result.stderr
        assert (
            "Protocol version: TLSv1.2" in s_client(hook.port, "-tls1_2", material.ca_cert).stderr
        )


def test_the_webhook_refuses_to_start_on_a_bad_pair_with_a_clear_error(
    material: Material, other: Material
) -> None:
    result = run_webhook(
        "--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", "0",
        "--tls-cert", material.tls_cert, "--tls-key", other.tls_key,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"{other.tls_key} is not the key of the certificate in {material.tls_cert}" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "PRIVATE KEY" not in result.stderr
