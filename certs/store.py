"""TLS material in a directory: `virtdev certs generate` and the webhook's local mode.

`ensure_material()` reads what the directory holds, lets `certs.rotation.plan()` decide, and
writes only what changed, each file atomically (a temporary file renamed over the old one), keys
with mode 0600. Running it again is cheap and safe: a valid CA is kept, the serving certificate
is re-issued only when it is due.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs import rotation

log = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"


@dataclass(frozen=True)
class Material:
    """Where the material is, and what this call changed (empty `changes`: nothing)."""

    ca_cert: Path
    tls_cert: Path
    tls_key: Path
    ca_key: Path
    changes: tuple[str, ...] = ()

    @property
    def issued(self) -> bool:
        """Whether anything was (re)issued or rewritten by this call."""
        return bool(self.changes)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names a Service is reached by inside the cluster, short to fully qualified."""
    if not service or not namespace:
        raise ValueError("service and namespace must not be empty")
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def ensure_material(
    out: Path,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    ca_days: int = 3650,
    days: int = 365,
    now: datetime | None = None,
    grace: timedelta = rotation.DEFAULT_GRACE,
) -> Material:
    """Make sure `out` holds a CA and a serving certificate for the names; see the module doc.

    Raises ValueError for bad names or periods and OSError when the directory is not writable.
    """
    out = Path(out)
    now = now or datetime.now(UTC)
    material = Material(
        ca_cert=out / CA_CERT,
        tls_cert=out / TLS_CERT,
        tls_key=out / TLS_KEY,
        ca_key=out / CA_KEY,
    )
    current = rotation.Stored(
        ca_bundle=_read(material.ca_cert),
        ca_key=_read(material.ca_key),
        tls_cert=_read(material.tls_cert),
        tls_key=_read(material.tls_key),
    )
    decided = rotation.plan(
        current,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        ca_days=ca_days,
        days=days,
        now=now,
        grace=grace,
    )
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    new = decided.stored
    # The CA first, then the key before the certificate: a reader that catches the directory
    # half-written sees a mismatched pair and keeps what it has (see certs.tls).
    for path, old, data, secret in (
        (material.ca_key, current.ca_key, new.ca_key, True),
        (material.ca_cert, current.ca_bundle, new.ca_bundle, False),
        (material.tls_key, current.tls_key, new.tls_key, True),
        (material.tls_cert, current.tls_cert, new.tls_cert, False),
    ):
        if data != old or not path.exists():
            _write_atomically(path, data, mode=0o600 if secret else 0o644)
        elif secret and path.stat().st_mode & 0o077:
            path.chmod(0o600)
    for change in decided.changes:
        log.info("TLS material: %s", change, extra={"dir": str(out)})
    return dataclasses.replace(material, changes=decided.changes)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
