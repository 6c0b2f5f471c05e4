"""ServingTLS on its own: what it accepts, refuses, reloads, counts and logs."""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from certs import pki
from certs.store import Material
from certs.tls import CertificateError, ServingTLS
from tests.certs.conftest import make_material
from tests.certs.helpers import SecretVolume

EXPIRY = "virtdev_webhook_certificate_expiry_timestamp_seconds"
RELOADS = "virtdev_webhook_certificate_reloads_total"


def pair(material: Material) -> dict[str, bytes]:
    return {"tls.crt": material.tls_cert.read_bytes(), "tls.key": material.tls_key.read_bytes()}


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Material:
    """A second, unrelated, good pair."""
    return make_material(tmp_path_factory.mktemp("other"))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def reloads(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value(RELOADS, {"result": result})
    assert value is not None
    return value


def test_context_allows_tls_1_2_and_newer_only(material: Material) -> None:
    tls = ServingTLS(material.tls_cert, material.tls_key)
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.context.verify_mode == ssl.CERT_NONE
    ciphers = {c["name"] for c in tls.context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert ciphers and all(name.startswith("ECDHE-") for name in ciphers)
    assert not any("CBC" in name or "SHA1" in name for name in ciphers)


def test_client_ca_makes_client_certificates_required(material: Material) -> None:
    tls = ServingTLS(material.tls_cert, material.tls_key, client_ca=material.ca_cert)
    assert tls.context.verify_mode == ssl.CERT_REQUIRED


def test_expiry_metric_and_not_after_are_the_certificate_s(
    material: Material, registry: CollectorRegistry
) -> None:
    tls = ServingTLS(material.tls_cert, material.tls_key, registry=registry)
    leaf = pki.load_certs(material.tls_cert.read_bytes())[0]
    assert tls.not_after == leaf.not_valid_after_utc
    assert registry.get_sample_value(EXPIRY) == leaf.not_valid_after_utc.timestamp()
    assert reloads(registry, "ok") == 0 and reloads(registry, "failed") == 0


def test_a_certificate_within_30_days_of_expiry_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    short = make_material(tmp_path, days=20)
    with caplog.at_level(logging.WARNING, logger="certs.tls"):
        ServingTLS(short.tls_cert, short.tls_key)
    assert any("expires in 19 days" in r.getMessage() for r in caplog.records), caplog.text


def test_a_certificate_far_from_expiry_is_no_warning(
    material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="certs.tls"):
        ServingTLS(material.tls_cert, material.tls_key)
    assert not caplog.records


def _expired(directory: Path) -> Material:
    return make_material(directory, now=datetime.now(UTC) - timedelta(days=30), days=10)


def _not_yet_valid(directory: Path) -> Material:
    return make_material(directory, now=datetime.now(UTC) + timedelta(days=2), days=10)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("mismatched", "is not the key of the certificate"),
        ("missing", "cannot read"),
        ("garbage-cert", "no PEM certificate"),
        ("garbage-key", "not an unencrypted PEM private key"),
        ("expired", "expired at"),
        ("not-yet-valid", "not valid before"),
    ],
)
def test_a_bad_pair_is_refused_at_start_with_a_clear_error(
    tmp_path: Path, material: Material, other: Material, breakage: str, message: str
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(material.tls_cert.read_bytes())
    key.write_bytes(material.tls_key.read_bytes())
    if breakage == "mismatched":
        key.write_bytes(other.tls_key.read_bytes())
    elif breakage == "missing":
        key.unlink()
    elif breakage == "garbage-cert":
        cert.write_bytes(b"hello")
    elif breakage == "garbage-key":
        key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    else:
        made = (_expired if breakage == "expired" else _not_yet_valid)(tmp_path / "m")
        cert.write_bytes(made.tls_cert.read_bytes())
        key.write_bytes(made.tls_key.read_bytes())
    with pytest.raises(CertificateError, match=message) as raised:
        ServingTLS(cert, key)
    assert "PRIVATE KEY" not in str(raised.value)


def test_an_unreadable_client_ca_is_a_certificate_error(material: Material, tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("nope")
    with pytest.raises(CertificateError, match="client CA"):
        ServingTLS(material.tls_cert, material.tls_key, client_ca=tmp_path / "ca.crt")


def test_reload_without_a_change_does_nothing(
    material: Material, registry: CollectorRegistry
) -> None:
    tls = ServingTLS(material.tls_cert, material.tls_key, registry=registry)
    assert tls.reload() is False
    assert reloads(registry, "ok") == 0 and reloads(registry, "failed") == 0


def test_a_symlink_swap_is_seen_although_no_visible_mtime_changes(
    tmp_path: Path, material: Material, other: Material, registry: CollectorRegistry
) -> None:
    volume = SecretVolume(tmp_path / "tls", pair(material))
    tls = ServingTLS(volume.path("tls.crt"), volume.path("tls.key"), registry=registry)
    before = volume.path("tls.crt").lstat().st_mtime_ns
    old_serial = tls.certificate.serial_number

    volume.publish(pair(other))

    assert volume.path("tls.crt").lstat().st_mtime_ns == before
    assert tls.reload() is True
    assert tls.certificate.serial_number != old_serial
    assert tls.certificate == pki.load_certs(other.tls_cert.read_bytes())[0]
    assert reloads(registry, "ok") == 1
    assert registry.get_sample_value(EXPIRY) == tls.not_after.timestamp()


def test_a_bad_new_pair_is_refused_logged_once_counted_once_and_the_old_kept(
    tmp_path: Path,
    material: Material,
    other: Material,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    volume = SecretVolume(tmp_path / "tls", pair(material))
    tls = ServingTLS(volume.path("tls.crt"), volume.path("tls.key"), registry=registry)
    serving = tls.certificate
    volume.publish(
        {"tls.crt": other.tls_cert.read_bytes(), "tls.key": material.tls_key.read_bytes()}
    )

    with caplog.at_level(logging.WARNING, logger="certs.tls"):
        assert tls.reload() is False
        assert tls.reload() is False  # the same bad files again: neither logged nor counted
    assert tls.certificate == serving
    assert reloads(registry, "failed") == 1 and reloads(registry, "ok") == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "is not the key of the certificate" in errors[0].getMessage()
    assert "PRIVATE KEY" not in caplog.text

    # A good pair afterwards is taken.
    volume.publish(pair(other))
    assert tls.reload() is True
    assert tls.certificate != serving


@pytest.mark.parametrize("breakage", ["expired", "not-yet-valid", "deleted"])
def test_other_bad_new_pairs_are_refused_too(
    tmp_path: Path, material: Material, registry: CollectorRegistry, breakage: str
) -> None:
    volume = SecretVolume(tmp_path / "tls", pair(material))
    tls = ServingTLS(volume.path("tls.crt"), volume.path("tls.key"), registry=registry)
    if breakage == "deleted":
        volume.publish({"tls.crt": material.tls_cert.read_bytes()})  # tls.key now dangles
    else:
        made = (_expired if breakage == "expired" else _not_yet_valid)(tmp_path / "m")
        volume.publish(pair(made))
    assert tls.reload() is False
    assert tls.certificate == pki.load_certs(material.tls_cert.read_bytes())[0]
    assert reloads(registry, "failed") == 1


async def test_watch_takes_new_files_and_stops_when_cancelled(
    tmp_path: Path, material: Material, other: Material
) -> None:
    volume = SecretVolume(tmp_path / "tls", pair(material))
    tls = ServingTLS(volume.path("tls.crt"), volume.path("tls.key"))
    serving = tls.certificate
    watcher = asyncio.create_task(tls.watch(interval=0.01))
    volume.publish(pair(other))
    async with asyncio.timeout(10):
        while tls.certificate == serving:  # the condition the watcher makes true
            await asyncio.sleep(0.01)
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
