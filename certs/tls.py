"""The webhook's serving TLS: one `ssl.SSLContext` for the server, new pairs without restarts.

The server is given `ServingTLS.context` once. That context's `sni_callback` runs on every
handshake (with or without SNI) and points the connection at the *current* inner context, so
after `reload()` swaps the inner context new handshakes present the new pair while open
connections finish on the old one. Settings that OpenSSL copies from the outer context when a
connection is made (protocol versions, ciphers, client-certificate mode) are identical on every
context, because one function builds them all.

`reload()` compares file *content*: a Secret volume changes by swapping its `..data` symlink,
which leaves the mtimes of the visible paths untouched. A new pair is tried on a fresh context
first; a bad one (unreadable, key and certificate that do not match, expired, not yet valid) is
refused, logged once, counted, and the old pair keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry, Counter, Gauge

from certs import pki

log = logging.getLogger(__name__)

#: TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 suites are all of that already).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1"
#: A serving certificate closer than this to its end is logged as a warning.
EXPIRY_WARNING = timedelta(days=30)
_EXPIRY_CHECK_EVERY = 3600.0
_READ_ATTEMPTS = 5


class CertificateError(Exception):
    """A certificate/key pair cannot serve; the message says which files and why."""

    #: Fingerprint of the refused file contents, so one bad version is reported once.
    digest: bytes = b""


class ServingTLS:
    """The HTTPS port's certificate, reloadable while the server runs."""

    def __init__(
        self,
        cert_file: str | Path,
        key_file: str | Path,
        *,
        client_ca: str | Path | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.client_ca = Path(client_ca) if client_ca is not None else None
        registry = registry if registry is not None else CollectorRegistry()
        self._expiry = Gauge(
            "virtdev_webhook_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time)",
            registry=registry,
        )
        self._reloads = Counter(
            "virtdev_webhook_certificate_reloads",
            "Changed certificate files seen, by result (ok: now serving; failed: refused)",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "failed"):
            self._reloads.labels(result=result)
        try:
            digest, inner, leaf = self._load()  # a bad pair at start is a CertificateError
        except _Unsettled:
            raise CertificateError(
                f"{self.cert_file} and {self.key_file} keep changing while being read"
            ) from None
        self._digest = digest
        self._refused: tuple[bytes, str] | None = None
        self._current = inner
        self._leaf = leaf
        # The outer context carries the connection settings; its own pair is only a fallback,
        # the callback replaces it on every handshake.
        self._outer = _new_context(self.client_ca)
        try:
            self._outer.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            raise CertificateError(f"{self.cert_file} / {self.key_file}: {error}") from None
        self._outer.sni_callback = self._select
        self._expiry.set(leaf.not_valid_after_utc.timestamp())
        log.info("serving certificate loaded", extra={"certificate": pki.describe(leaf)})
        self._warn_if_expiring()

    @property
    def context(self) -> ssl.SSLContext:
        """The context to give the server, once; it always serves the newest good pair."""
        return self._outer

    @property
    def not_after(self) -> datetime:
        """When the certificate now being served expires (UTC)."""
        return self._leaf.not_valid_after_utc

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate now being served."""
        return self._leaf

    def reload(self) -> bool:
        """Serve the files' pair if it changed and is good; True when a new pair was taken."""
        try:
            digest, inner, leaf = self._load(unless=self._digest)
        except _Unchanged:
            self._refused = None  # back to the pair being served: a bad one again is news
            return False
        except _Unsettled:
            log.debug("certificate files changed while being read; trying again next time")
            return False
        except CertificateError as error:
            key = (error.digest, str(error))
            if self._refused != key:  # log and count each bad version once, not every poll
                self._refused = key
                self._reloads.labels(result="failed").inc()
                log.error(
                    "refused new certificate files, still serving the previous pair: %s",
                    error,
                    extra={"certificate": pki.describe(self._leaf)},
                )
            return False
        self._current, self._leaf, self._digest, self._refused = inner, leaf, digest, None
        self._reloads.labels(result="ok").inc()
        self._expiry.set(leaf.not_valid_after_utc.timestamp())
        log.info("serving a new certificate", extra={"certificate": pki.describe(leaf)})
        self._warn_if_expiring()
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever the files change, until cancelled.

        Polling the content is deliberate: the kubelet updates a Secret volume by swapping a
        symlink, which file-change notifications on the visible paths do not report reliably,
        and reading two small files once a second costs nothing.
        """
        last_expiry_check = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload()
            except Exception:  # never let the watcher die; the old pair keeps serving
                log.exception("certificate reload failed unexpectedly")
            if time.monotonic() - last_expiry_check >= _EXPIRY_CHECK_EVERY:
                last_expiry_check = time.monotonic()
                self._warn_if_expiring()

    # --- internals ------------------------------------------------------------------------

    def _select(
        self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object
    ) -> None:
        connection.context = self._current

    def _warn_if_expiring(self) -> None:
        left = self.not_after - datetime.now(UTC)
        if left < EXPIRY_WARNING:
            log.warning(
                "the serving certificate expires in %d days",
                max(left.days, 0),
                extra={"not_after": f"{self.not_after:%Y-%m-%dT%H:%M:%SZ}"},
            )

    def _read_files(self) -> tuple[bytes, bytes, bytes]:
        """Read the files until two reads agree, so a symlink swap mid-read is not a bad pair."""
        previous: tuple[bytes, bytes, bytes] | None = None
        for _ in range(_READ_ATTEMPTS):
            try:
                contents = (
                    self.cert_file.read_bytes(),
                    self.key_file.read_bytes(),
                    self.client_ca.read_bytes() if self.client_ca else b"",
                )
            except OSError as error:
                raise CertificateError(
                    f"cannot read {error.filename}: {error.strerror or error}"
                ) from None
            if contents == previous:
                return contents
            previous = contents
        raise _Unsettled

    def _load(self, unless: bytes | None = None) -> tuple[bytes, ssl.SSLContext, x509.Certificate]:
        cert_pem, key_pem, ca_pem = self._read_files()
        digest = hashlib.sha256(b"\0".join((cert_pem, key_pem, ca_pem))).digest()
        if digest == unless:
            raise _Unchanged
        try:
            leaf = _check_pair(cert_pem, key_pem, self.cert_file, self.key_file)
            context = _new_context(self.client_ca)
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as error:
                raise CertificateError(
                    f"{self.cert_file} / {self.key_file}: OpenSSL refused the pair: {error}"
                ) from None
            # OpenSSL read the files again; make sure it saw the bytes that were checked.
            if self._read_files() != (cert_pem, key_pem, ca_pem):
                raise _Unsettled
        except CertificateError as error:
            error.digest = digest
            raise
        return digest, context, leaf


class _Unchanged(Exception):
    """The files hold the pair being served."""


class _Unsettled(Exception):
    """The files changed while being read (an update in progress): look again later."""


def _check_pair(
    cert_pem: bytes, key_pem: bytes, cert_file: Path, key_file: Path
) -> x509.Certificate:
    """The leaf of a good pair; CertificateError names what is wrong (never the key itself)."""
    certs = pki.load_certs(cert_pem)
    if not certs:
        raise CertificateError(f"{cert_file}: no PEM certificate in it")
    leaf = certs[0]
    key = _load_any_key(key_pem)
    if key is None:
        raise CertificateError(f"{key_file}: not an unencrypted PEM private key")
    if not pki.same_public_key(leaf, key):
        raise CertificateError(f"{key_file} is not the key of the certificate in {cert_file}")
    now = datetime.now(UTC)
    if now < leaf.not_valid_before_utc:
        raise CertificateError(f"{cert_file}: not valid before {leaf.not_valid_before_utc}")
    if now >= leaf.not_valid_after_utc:
        raise CertificateError(f"{cert_file}: expired at {leaf.not_valid_after_utc}")
    return leaf


def _load_any_key(pem: bytes) -> object | None:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None


def _new_context(client_ca: Path | None) -> ssl.SSLContext:
    """A server context with this project's settings; every context here comes from it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as error:
            raise CertificateError(f"client CA {client_ca}: {error}") from None
    return context
