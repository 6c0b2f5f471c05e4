"""Certificates as values: make a CA, issue a serving certificate, and judge existing ones.

Pure functions over `cryptography` objects and PEM bytes, no files and no clock of their own
(`now` is always passed in), so the rotation rules above them can be tested at any instant.
Keys are ECDSA P-256: small, fast, and accepted by every API server and client we talk to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Certificates start this much before the moment they are made, so a peer whose clock is a
#: little behind does not see them as not yet valid.
BACKDATE = timedelta(minutes=5)
#: A certificate is renewed once this share of its life has passed (as cert-manager does).
RENEW_AFTER = 2 / 3

CA_COMMON_NAME = "virtdev-webhook-ca"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def parse_ips(ip_addresses: Sequence[str]) -> tuple[IPAddress, ...]:
    """Parse IP SANs; a malformed one is a ValueError that names it."""
    parsed = []
    for text in ip_addresses:
        try:
            parsed.append(ipaddress.ip_address(text.strip()))
        except ValueError:
            raise ValueError(f"not an IP address: {text!r}") from None
    return tuple(dict.fromkeys(parsed))


_DNS_NAME = re.compile(
    r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)


def clean_dns_names(dns_names: Sequence[str]) -> tuple[str, ...]:
    """Lower-case, de-duplicated DNS names (RFC 1123, `*.` allowed first); others: ValueError."""
    names = tuple(dict.fromkeys(name.strip().lower().rstrip(".") for name in dns_names))
    for name in names:
        if len(name) > 253 or not _DNS_NAME.match(name):
            raise ValueError(f"not a DNS name: {name!r}")
    return names


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_ca(*, now: datetime, days: int) -> KeyPair:
    """A self-signed CA that may sign serving certificates and nothing below them."""
    if days < 1:
        raise ValueError(f"CA validity must be at least one day, got {days}")
    key = new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            # A CA renewed with the same name must still be told apart by people reading it.
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{now:%Y%m%dT%H%M%SZ}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue_leaf(
    ca: KeyPair,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[IPAddress] = (),
    now: datetime,
    days: int,
) -> KeyPair:
    """A serving certificate for the names, signed by the CA; never valid longer than the CA."""
    if days < 1:
        raise ValueError(f"certificate validity must be at least one day, got {days}")
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    key = new_key()
    public = key.public_key()
    common_name = dns_names[0] if dns_names else str(ip_addresses[0])
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ip) for ip in ip_addresses]
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


# --- judging what exists -------------------------------------------------------------------


def is_valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def renewal_time(cert: x509.Certificate) -> datetime:
    """When RENEW_AFTER of the certificate's life will have passed."""
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_before_utc + life * RENEW_AFTER


def issued_at(cert: x509.Certificate) -> datetime:
    """When a certificate made here was made (its start minus the backdating)."""
    return cert.not_valid_before_utc + BACKDATE


def is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` issued `cert`: the names match and the signature verifies."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def same_public_key(cert: x509.Certificate, key: object) -> bool:
    """Whether the private key belongs to the certificate."""
    public_key = getattr(key, "public_key", None)
    if public_key is None:
        return False
    encoding, fmt = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    mine: bytes = public_key().public_bytes(encoding, fmt)
    return mine == cert.public_key().public_bytes(encoding, fmt)


def subject_alt_names(cert: x509.Certificate) -> tuple[frozenset[str], frozenset[IPAddress]]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    dns = frozenset(name.lower() for name in sans.get_values_for_type(x509.DNSName))
    ips = frozenset(
        ip
        for ip in sans.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
    )
    return dns, ips


def describe(cert: x509.Certificate) -> str:
    """A short, secret-free description for logs: subject, serial and validity."""
    subject = cert.subject.rfc4514_string()
    return (
        f"{subject} serial={cert.serial_number:x} "
        f"valid {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
        f"..{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    )


# --- PEM ------------------------------------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_certs(pem: bytes | None) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM bundle; anything unreadable is an empty tuple."""
    if not pem:
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(pem))
    except ValueError:
        return ()


def load_key(pem: bytes | None) -> ec.EllipticCurvePrivateKey | None:
    """An unencrypted ECDSA private key, or None when absent or unusable."""
    if not pem:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None
