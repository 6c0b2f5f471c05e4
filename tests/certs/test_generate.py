"""`ensure_material` and `virtdev certs generate / ca-bundle`, checked with the openssl CLI."""

from __future__ import annotations

import base64
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certs import pki
from certs.store import Material, service_dns_names
from tests.certs.conftest import DNS_NAMES, VIRTDEV, make_material, needs_openssl, run


def test_service_dns_names_run_from_short_to_fully_qualified() -> None:
    assert service_dns_names("hook", "ns") == [
        "hook",
        "hook.ns",
        "hook.ns.svc",
        "hook.ns.svc.cluster.local",
    ]


def test_keys_are_readable_by_the_owner_only(material: Material) -> None:
    for path in (material.tls_key, material.ca_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (material.ca_cert, material.tls_cert):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@needs_openssl
def test_openssl_verifies_the_leaf_against_the_ca(material: Material) -> None:
    result = run("openssl", "verify", "-CAfile", material.ca_cert, material.tls_cert)
    assert result.stdout.strip() == f"{material.tls_cert}: OK"
    # and for the purpose a TLS server has
    run(
        "openssl", "verify", "-purpose", "sslserver", "-CAfile", material.ca_cert, material.tls_cert
    )


@needs_openssl
def test_openssl_sees_the_ca_as_a_ca_for_signing_certificates(material: Material) -> None:
    text = run("openssl", "x509", "-in", material.ca_cert, "-noout", "-text").stdout
    assert re.search(r"Basic Constraints: critical\s+CA:TRUE", text)
    assert re.search(r"Key Usage: critical\s+Certificate Sign, CRL Sign\n", text)
    assert "Public Key Algorithm: id-ecPublicKey" in text and "prime256v1" in text


@needs_openssl
def test_openssl_sees_the_leaf_names_usages_and_validity(material: Material) -> None:
    text = run("openssl", "x509", "-in", material.tls_cert, "-noout", "-text").stdout
    sans = re.search(r"Subject Alternative Name:\s*\n\s*(.+)\n", text)
    assert sans is not None
    assert sans.group(1).split(", ") == [*(f"DNS:{n}" for n in DNS_NAMES), "IP Address:127.0.0.1"]
    assert re.search(r"Extended Key Usage:\s*\n\s*TLS Web Server Authentication\n", text)
    assert re.search(r"Key Usage: critical\s+Digital Signature\n", text)
    assert re.search(r"Basic Constraints: critical\s+CA:FALSE", text)
    assert "prime256v1" in text
    dates = run("openssl", "x509", "-in", material.tls_cert, "-noout", "-startdate", "-enddate")
    found = dict(line.split("=", 1) for line in dates.stdout.splitlines())
    start = datetime.strptime(found["notBefore"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    end = datetime.strptime(found["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    now = datetime.now(UTC)
    assert now - timedelta(minutes=10) < start < now
    assert end - start == timedelta(days=365) + pki.BACKDATE


@needs_openssl
def test_openssl_matches_each_key_to_its_certificate(material: Material) -> None:
    for cert, key in ((material.tls_cert, material.tls_key), (material.ca_cert, material.ca_key)):
        from_cert = run("openssl", "x509", "-in", cert, "-noout", "-pubkey").stdout
        from_key = run("openssl", "pkey", "-in", key, "-pubout").stdout
        assert from_cert == from_key


def test_running_again_keeps_everything(tmp_path: Path) -> None:
    first = make_material(tmp_path)
    contents = {p: p.read_bytes() for p in (first.ca_cert, first.ca_key, first.tls_cert)}
    again = make_material(tmp_path)
    assert first.issued and not again.issued
    assert {p: p.read_bytes() for p in contents} == contents


def test_a_due_leaf_is_reissued_and_the_ca_kept(tmp_path: Path) -> None:
    first = make_material(tmp_path)
    ca, ca_key = first.ca_cert.read_bytes(), first.ca_key.read_bytes()
    old_leaf = first.tls_cert.read_bytes()
    later = make_material(tmp_path, now=datetime.now(UTC) + timedelta(days=250))
    assert later.issued
    assert first.tls_cert.read_bytes() != old_leaf
    assert (first.ca_cert.read_bytes(), first.ca_key.read_bytes()) == (ca, ca_key)


def test_a_key_made_too_open_is_closed_again(tmp_path: Path) -> None:
    first = make_material(tmp_path)
    first.tls_key.chmod(0o644)
    make_material(tmp_path)
    assert stat.S_IMODE(first.tls_key.stat().st_mode) == 0o600


def test_an_unwritable_directory_is_an_os_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        make_material(blocker / "certs")


@needs_openssl
def test_cli_generate_then_ca_bundle(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    argv = [*VIRTDEV, "certs", "generate", "--out", out, "--service", "hook", "--namespace", "ns"]
    first = run(*argv, "--dns", "hook.example", "--ip", "10.1.2.3,::1", "--days", "30")
    assert "updated" in first.stdout
    text = run("openssl", "x509", "-in", out / "tls.crt", "-noout", "-ext", "subjectAltName")
    assert "DNS:hook.ns.svc.cluster.local, DNS:hook.example" in text.stdout
    assert "IP Address:10.1.2.3, IP Address:0:0:0:0:0:0:0:1" in text.stdout
    again = run(*argv, "--dns", "hook.example", "--ip", "10.1.2.3,::1", "--days", "30")
    assert "already up to date" in again.stdout

    bundle = run(*VIRTDEV, "certs", "ca-bundle", out).stdout.strip()
    assert base64.b64decode(bundle) == (out / "ca.crt").read_bytes()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--out", "{tmp}", "--ip", "300.1.1.1"], "not an IP address"),
        (["generate", "--out", "{tmp}", "--days", "0"], "must be at least 1"),
        (["generate", "--out", "{tmp}", "--days", "4000"], "cannot outlive"),
        (["ca-bundle", "{tmp}"], "No such file"),
    ],
)
def test_cli_bad_input_is_a_clear_error(tmp_path: Path, argv: list[str], message: str) -> None:
    filled = [arg.replace("{tmp}", str(tmp_path / "x")) for arg in argv]
    result = run(*VIRTDEV, "certs", *filled, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
