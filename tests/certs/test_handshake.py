"""Real handshakes against a real uvicorn server holding `ServingTLS.context`.

The app behind it is trivial on purpose: these tests are about the TLS port. The end-to-end
tests with the real `virtdev webhook` process are in test_webhook_process.py.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import pki
from certs.store import Material
from certs.tls import ServingTLS
from tests.certs.conftest import DNS_NAMES, make_material, needs_curl, needs_openssl, run
from tests.certs.helpers import client_context, https_post, uvicorn_serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("other"))


@pytest.fixture
def served(material: Material, tmp_path: Path) -> Iterator[tuple[int, ServingTLS, Path]]:
    """A server on copies of the material (tests may overwrite them); yields port, tls, dir."""
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_bytes((material.ca_cert.parent / name).read_bytes())
    tls = ServingTLS(tmp_path / "tls.crt", tmp_path / "tls.key")
    with uvicorn_serving(tls) as port:
        yield port, tls, tmp_path


def leaf_of(material: Material) -> x509.Certificate:
    return pki.load_certs(material.tls_cert.read_bytes())[0]


@pytest.mark.parametrize("name", DNS_NAMES)
def test_python_client_verifies_each_service_name(
    served: tuple[int, ServingTLS, Path], material: Material, name: str
) -> None:
    port, _, _ = served
    answer = https_post(port, client_context(material.ca_cert), server_hostname=name, body=b"1234")
    assert (answer.status, answer.body) == (200, b"4")
    assert answer.peer == leaf_of(material)
    assert answer.version == "TLSv1.3"


def test_python_client_refuses_a_name_the_certificate_lacks(
    served: tuple[int, ServingTLS, Path], material: Material
) -> None:
    port, _, _ = served
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        https_post(port, client_context(material.ca_cert), server_hostname="other.virtdev.svc")


@needs_curl
def test_curl_with_cacert_reaches_every_name_and_the_ip(
    served: tuple[int, ServingTLS, Path], material: Material
) -> None:
    port, _, _ = served
    urls = [f"https://{name}:{port}/mutate" for name in DNS_NAMES]
    urls.append(f"https://127.0.0.1:{port}/mutate")  # an IP: no SNI at all
    resolves = [arg for name in DNS_NAMES for arg in ("--resolve", f"{name}:{port}:127.0.0.1")]
    each = [arg for url in urls for arg in (url, "--output", "/dev/null")]
    result = run(
        "curl", "--silent", "--show-error", "--cacert", material.ca_cert, *resolves,
        "--data", "{}", "--write-out", "%{http_code} %{ssl_verify_result}\n", *each,
    )  # fmt: skip
    assert result.stdout.splitlines() == ["200 0"] * (len(DNS_NAMES) + 1)


def test_new_handshakes_get_the_new_pair_and_open_connections_keep_working(
    served: tuple[int, ServingTLS, Path], material: Material, other: Material
) -> None:
    port, tls, directory = served
    context = client_context(material.ca_cert)
    context_other = client_context(other.ca_cert)
    kept = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    kept.request("POST", "/mutate", body=b"{}")
    assert kept.getresponse().read() == b"2"

    (directory / "tls.key").write_bytes(other.tls_key.read_bytes())
    (directory / "tls.crt").write_bytes(other.tls_cert.read_bytes())
    assert tls.reload() is True

    answer = https_post(port, context_other, server_hostname=DNS_NAMES[2])
    assert answer.peer == leaf_of(other)
    with pytest.raises(ssl.SSLCertVerificationError):
        https_post(port, context, server_hostname=DNS_NAMES[2])
    # The connection opened before the reload still answers, on the old certificate.
    kept.request("POST", "/mutate", body=b"{}")
    assert kept.getresponse().read() == b"2"
    assert kept.sock is not None
    peer = kept.sock.getpeercert(binary_form=True)
    assert peer is not None and x509.load_der_x509_certificate(peer) == leaf_of(material)
    kept.close()


# --- client certificates ---------------------------------------------------------------------


def client_certificate(directory: Path, ca: Material) -> tuple[Path, Path]:
    """A clientAuth certificate signed by `ca`'s CA, as an API server would present."""
    ca_pair = pki.KeyPair(
        pki.load_certs(ca.ca_cert.read_bytes())[0],
        pki.load_key(ca.ca_key.read_bytes()),  # type: ignore[arg-type]
    )
    key = pki.new_key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_pair.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_pair.key, hashes.SHA256())
    )
    directory.mkdir(exist_ok=True)
    (directory / "client.crt").write_bytes(pki.cert_pem(cert))
    (directory / "client.key").write_bytes(pki.key_pem(key))
    return directory / "client.crt", directory / "client.key"


def refused(port: int, context: ssl.SSLContext) -> bool:
    """True when the server ends the connection instead of answering (TLS 1.3 tells the client
    about a rejected certificate only after its side of the handshake is done)."""
    try:
        answer = https_post(port, context, server_hostname=DNS_NAMES[0])
    except (ssl.SSLError, ConnectionError, IndexError, ValueError):
        return True
    return answer.status != 200


def test_client_ca_requires_a_client_certificate_signed_by_it(
    material: Material, other: Material, tmp_path: Path
) -> None:
    api_server = make_material(tmp_path / "api-ca", dns_names=["unused"])
    good_cert, good_key = client_certificate(tmp_path / "good", api_server)
    stranger_cert, stranger_key = client_certificate(tmp_path / "stranger", other)
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_bytes((material.ca_cert.parent / name).read_bytes())
    tls = ServingTLS(tmp_path / "tls.crt", tmp_path / "tls.key", client_ca=api_server.ca_cert)
    with uvicorn_serving(tls) as port:
        for round_ in ("before", "after"):
            with_cert = client_context(material.ca_cert, cert=good_cert, key=good_key)
            assert https_post(port, with_cert, server_hostname=DNS_NAMES[0]).status == 200, round_
            assert refused(port, client_context(material.ca_cert)), round_
            stranger = client_context(material.ca_cert, cert=stranger_cert, key=stranger_key)
            assert refused(port, stranger), round_
            # After a reload the connection is served by a new inner context: same rules.
            (tmp_path / "tls.key").write_bytes(material.tls_key.read_bytes())
            (tmp_path / "tls.crt").write_bytes(b"\n" + material.tls_cert.read_bytes())
            assert tls.reload() or round_ == "after"


# --- protocol versions and plain HTTP ----------------------------------------------------------


@contextlib.contextmanager
def permissive_server(material: Material) -> Iterator[int]:
    """A throwaway TLS server that does accept TLS 1.0 and 1.1: the positive control."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # enabling old versions is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT@SECLEVEL=0")
    context.load_cert_chain(material.tls_cert, material.tls_key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), connection:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"hello\n")

    thread = threading.Thread(target=serve, name="tls11-control")
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=10)


def s_client(port: int, flag: str, ca: Path) -> subprocess.CompletedProcess[str]:
    return run(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", flag,
        "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", ca, "-brief",
        check=False,
    )  # fmt: skip


@needs_openssl
@pytest.mark.parametrize(("flag", "version"), [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")])
def test_tls_1_0_and_1_1_are_refused_while_the_same_client_reaches_a_server_that_allows_them(
    served: tuple[int, ServingTLS, Path], material: Material, flag: str, version: str
) -> None:
    port, _, _ = served
    with permissive_server(material) as control_port:
        control = s_client(control_port, flag, material.ca_cert)
    assert f"Protocol version: {version}\n" in control.stderr, control.stderr

    refused_ = s_client(port, flag, material.ca_cert)
    assert refused_.returncode != 0
    assert "CONNECTION ESTABLISHED" not in refused_.stderr
    assert "Protocol version" not in refused_.stderr


@needs_openssl
def test_tls_1_2_is_accepted_with_a_forward_secret_aead_suite(
    served: tuple[int, ServingTLS, Path], material: Material
) -> None:
    port, _, _ = served
    result = s_client(port, "-tls1_2", material.ca_cert)
    assert "Protocol version: TLSv1.2\n" in result.stderr
    assert "Ciphersuite: ECDHE-ECDSA-AES" in result.stderr and "GCM" in result.stderr
    assert "Verification: OK" in result.stderr


def test_plain_http_gets_no_answer(served: tuple[int, ServingTLS, Path]) -> None:
    port, _, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        received = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(4096):
                received += chunk
    assert b"HTTP/1." not in received


@needs_curl
def test_curl_over_plain_http_fails(served: tuple[int, ServingTLS, Path]) -> None:
    port, _, _ = served
    result = run("curl", "--silent", "--max-time", "10", f"http://127.0.0.1:{port}/", check=False)
    assert result.returncode != 0 and result.stdout == ""
