"""What to do with the TLS material we have, at a given instant: the rotation rules in one place.

The local files (`virtdev certs generate`, the webhook's local mode) and the in-cluster Secret
(`virtdev certs ensure`) hold the same four things, and both go through `plan()`:

- `ca.crt`: the CA *bundle* — every CA the clients must trust now (this is also `caBundle`);
- `ca.key`: the key of the newest CA, the one that signs;
- `tls.crt` / `tls.key`: the serving certificate and its key.

The rules, so that no handshake fails during a rotation:

1. A leaf is re-issued when it is missing, unusable, expired, past two thirds of its life, when
   its names differ from the wanted ones, or when no CA in the bundle signed it.
2. The CA is renewed once two thirds of its life have passed (years before it expires). The new
   CA joins the bundle *next to* the old one and becomes the signing CA, but the leaf signed by
   the old CA keeps serving until the new CA has been in the bundle for `grace` — long enough
   for every API server to have read the new `caBundle`. Only then is the leaf re-issued by the
   new CA.
3. An old CA leaves the bundle once it has expired, or once the current leaf is not signed by it
   and has been in place for `grace` — long enough for every webhook replica to have loaded it.

Each rule needs only the material itself and the clock: the time a certificate was issued is its
start plus the backdating, so the rotation needs no state of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from certs import pki

#: How long a change must have been published before the next step builds on it: the API
#: servers' informers see a new caBundle within seconds, the kubelet refreshes Secret volumes
#: within about a minute (plus its cache TTL), and the webhook polls its files every second.
DEFAULT_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class Stored:
    """The TLS material as PEM bytes, exactly as it sits in files or in a Secret's data."""

    ca_bundle: bytes = b""
    ca_key: bytes = b""
    tls_cert: bytes = b""
    tls_key: bytes = b""


@dataclass(frozen=True)
class Plan:
    """The material to store, and the reasons it differs from what was there (empty: nothing)."""

    stored: Stored
    changes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def plan(
    current: Stored,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    ca_days: int = 3650,
    days: int = 365,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> Plan:
    """Decide what the stored material must become at `now` (see the module docstring)."""
    names = pki.clean_dns_names(dns_names)
    ips = pki.parse_ips(ip_addresses)
    if ca_days < 1 or days < 1:
        raise ValueError("validity periods must be at least one day")
    if days > ca_days:
        raise ValueError(f"the certificate ({days} days) cannot outlive its CA ({ca_days} days)")
    changes: list[str] = []

    # The bundle: keep the CAs that are still CAs and still valid.
    bundle: list[x509.Certificate] = []
    stored_cas = pki.load_certs(current.ca_bundle)
    for cert in stored_cas:
        if pki.is_ca(cert) and pki.is_valid_at(cert, now):
            bundle.append(cert)
        else:
            changes.append(f"dropped expired or unusable CA {pki.describe(cert)}")
    if current.ca_bundle and not stored_cas:
        changes.append("dropped an unreadable CA bundle")

    # The signing CA: the bundle's certificate that belongs to ca.key.
    ca_key = pki.load_key(current.ca_key)
    signing: pki.KeyPair | None = None
    if ca_key is not None:
        for cert in reversed(bundle):
            if pki.same_public_key(cert, ca_key):
                signing = pki.KeyPair(cert, ca_key)
                break
    if signing is None:
        signing = pki.new_ca(now=now, days=ca_days)
        bundle.append(signing.cert)
        changes.append(f"made a new CA (no usable CA key): {pki.describe(signing.cert)}")
    elif now >= pki.renewal_time(signing.cert):
        old = signing
        signing = pki.new_ca(now=now, days=ca_days)
        bundle.append(signing.cert)
        changes.append(
            f"renewed the CA ({pki.describe(old.cert)} is past two thirds of its life): "
            f"{pki.describe(signing.cert)}"
        )

    # The leaf.
    leaf_certs = pki.load_certs(current.tls_cert)
    leaf = leaf_certs[0] if leaf_certs else None
    leaf_key = pki.load_key(current.tls_key)
    issuer = next((ca for ca in bundle if leaf and pki.signed_by(leaf, ca)), None)
    reason = _leaf_problem(leaf, leaf_key, issuer, names, ips, now)
    new_ca_published = now >= pki.issued_at(signing.cert) + grace
    if reason is None and issuer is not signing.cert and new_ca_published:
        reason = "it is signed by the previous CA and the new CA has been published"
    if reason is not None:
        issued = pki.issue_leaf(signing, dns_names=names, ip_addresses=ips, now=now, days=days)
        leaf, leaf_key, issuer = issued.cert, issued.key, signing.cert
        changes.append(f"issued a serving certificate ({reason}): {pki.describe(leaf)}")
        tls_cert, tls_key = pki.cert_pem(leaf), pki.key_pem(leaf_key)
    else:
        tls_cert, tls_key = current.tls_cert, current.tls_key
    assert leaf is not None

    # Retire CAs that nothing served can chain to any more.
    leaf_settled = now >= pki.issued_at(leaf) + grace
    kept = []
    for ca in bundle:
        if ca is signing.cert or ca is issuer or not leaf_settled:
            kept.append(ca)
        else:
            changes.append(f"retired the previous CA {pki.describe(ca)}")

    ca_bundle = b"".join(pki.cert_pem(ca) for ca in kept)
    if ca_bundle != current.ca_bundle and not changes:
        changes.append("rewrote the CA bundle")
    ca_key_pem = current.ca_key if signing.key is ca_key else pki.key_pem(signing.key)
    return Plan(Stored(ca_bundle, ca_key_pem, tls_cert, tls_key), tuple(changes))


def _leaf_problem(
    leaf: x509.Certificate | None,
    key: object,
    issuer: x509.Certificate | None,
    names: Sequence[str],
    ips: Sequence[pki.IPAddress],
    now: datetime,
) -> str | None:
    """Why the serving certificate must be re-issued now, or None when it may stay."""
    if leaf is None:
        return "none usable"
    if key is None or not pki.same_public_key(leaf, key):
        return "its key is missing or does not match"
    if not pki.is_valid_at(leaf, now):
        return "it is expired or not yet valid"
    if now >= pki.renewal_time(leaf):
        return "two thirds of its life have passed"
    if pki.subject_alt_names(leaf) != (frozenset(names), frozenset(ips)):
        return "its names differ from the wanted ones"
    if issuer is None:
        return "no CA in the bundle signed it"
    return None
