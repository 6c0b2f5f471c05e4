"""The rotation rules of certs.rotation, at chosen instants (no files, no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from certs import pki, rotation
from certs.rotation import Stored, plan

NAMES = ("virtdev-webhook", "virtdev-webhook.virtdev.svc")
START = datetime(2030, 1, 1, tzinfo=UTC)
GRACE = timedelta(minutes=10)


def at(stored: Stored, now: datetime, **overrides: object) -> rotation.Plan:
    kwargs: dict[str, object] = {"dns_names": NAMES, "now": now, "grace": GRACE}
    kwargs.update(overrides)
    return plan(stored, **kwargs)  # type: ignore[arg-type]


def bundle(stored: Stored) -> tuple[x509.Certificate, ...]:
    return pki.load_certs(stored.ca_bundle)


def leaf(stored: Stored) -> x509.Certificate:
    return pki.load_certs(stored.tls_cert)[0]


def trusted(cert: x509.Certificate, cas: tuple[x509.Certificate, ...], now: datetime) -> bool:
    return pki.is_valid_at(cert, now) and any(
        pki.signed_by(cert, ca) and pki.is_valid_at(ca, now) for ca in cas
    )


@pytest.fixture(scope="module")
def fresh() -> Stored:
    return at(Stored(), START).stored


def test_empty_material_gets_a_ca_and_a_leaf_signed_by_it(fresh: Stored) -> None:
    (ca,) = bundle(fresh)
    assert pki.is_ca(ca)
    assert pki.same_public_key(ca, pki.load_key(fresh.ca_key))
    assert pki.signed_by(leaf(fresh), ca)
    assert pki.same_public_key(leaf(fresh), pki.load_key(fresh.tls_key))
    assert pki.subject_alt_names(leaf(fresh))[0] == frozenset(NAMES)


def test_running_again_changes_nothing(fresh: Stored) -> None:
    again = at(fresh, START + timedelta(days=100))
    assert again.changes == ()
    assert again.stored == fresh


def test_leaf_is_reissued_after_two_thirds_of_its_life_by_the_same_ca(fresh: Stored) -> None:
    before = at(fresh, START + timedelta(days=242))
    assert not before.changed
    after = at(fresh, START + timedelta(days=244)).stored
    assert leaf(after).serial_number != leaf(fresh).serial_number
    assert after.ca_bundle == fresh.ca_bundle and after.ca_key == fresh.ca_key


def test_leaf_is_reissued_when_the_names_change(fresh: Stored) -> None:
    changed = at(fresh, START + timedelta(days=1), dns_names=(*NAMES, "extra.example"))
    assert any("names differ" in change for change in changed.changes)
    assert "extra.example" in pki.subject_alt_names(leaf(changed.stored))[0]


def test_leaf_is_reissued_when_its_key_does_not_match(fresh: Stored) -> None:
    other = at(Stored(), START).stored
    broken = Stored(fresh.ca_bundle, fresh.ca_key, fresh.tls_cert, other.tls_key)
    repaired = at(broken, START + timedelta(days=1))
    assert any("key" in change for change in repaired.changes)
    assert pki.same_public_key(leaf(repaired.stored), pki.load_key(repaired.stored.tls_key))


def test_wildcards_and_upper_case_names_are_accepted() -> None:
    result = at(Stored(), START, dns_names=["*.Hooks.Example.", "HOOK"])
    assert pki.subject_alt_names(leaf(result.stored))[0] == {"*.hooks.example", "hook"}


def test_garbage_is_replaced_by_fresh_material() -> None:
    garbage = Stored(b"not pem", b"nor this", b"-----BEGIN CERTIFICATE-----\nxx", b"")
    result = at(garbage, START)
    (ca,) = bundle(result.stored)
    assert pki.signed_by(leaf(result.stored), ca)


def test_ca_renewal_publishes_the_new_ca_before_it_signs_the_leaf(fresh: Stored) -> None:
    # CA: 3650 days, renewed after two thirds (~6.7 years); leaf renewed yearly before that.
    old_ca = bundle(fresh)[0]
    renewal = pki.renewal_time(old_ca) + timedelta(minutes=1)
    state = at(fresh, renewal - timedelta(days=1)).stored  # a current leaf from the old CA
    assert pki.signed_by(leaf(state), old_ca)
    served_before = leaf(state)

    step1 = at(state, renewal)
    assert any("renewed the CA" in change for change in step1.changes)
    old, new = bundle(step1.stored)
    assert old.serial_number == old_ca.serial_number
    assert pki.same_public_key(new, pki.load_key(step1.stored.ca_key))
    assert step1.stored.tls_cert == state.tls_cert, "the leaf waits until the new CA is published"

    step2 = at(step1.stored, renewal + GRACE + timedelta(seconds=1))
    assert pki.signed_by(leaf(step2.stored), new)
    assert len(bundle(step2.stored)) == 2, "the old CA stays while the old leaf may be served"

    step3 = at(step2.stored, renewal + 2 * GRACE + timedelta(seconds=2))
    assert [ca.serial_number for ca in bundle(step3.stored)] == [new.serial_number]
    assert served_before.serial_number != leaf(step3.stored).serial_number


def test_an_expired_ca_is_dropped_and_replaced(fresh: Stored) -> None:
    later = START + timedelta(days=3651)
    result = at(fresh, later)
    (ca,) = bundle(result.stored)
    assert ca.serial_number != bundle(fresh)[0].serial_number
    assert trusted(leaf(result.stored), (ca,), later)


def test_no_handshake_fails_across_twelve_years_of_daily_runs() -> None:
    """Whatever the API server and the replicas still hold from the previous run, it works.

    At each run the API server may still verify with the previous caBundle while the new leaf
    is served, and replicas may still serve the previous leaf against the new caBundle: both
    combinations must verify, across leaf renewals and two CA renewals (at 6.7 and 13.3 years).
    """
    now = START
    state = at(Stored(), now).stored
    ca_renewals = leaf_renewals = 0
    for _ in range(15 * 365):
        now += timedelta(days=1)
        result = at(state, now, grace=timedelta(hours=1))
        new = result.stored
        if new.ca_key != state.ca_key:
            ca_renewals += 1
        if new.tls_cert != state.tls_cert:
            leaf_renewals += 1
            # The new leaf against the bundle the API server held so far, and the old one
            # (still served for a while) against the new bundle.
            assert trusted(leaf(new), bundle(state), now), now
            assert trusted(leaf(state), bundle(new), now), now
        assert trusted(leaf(new), bundle(new), now), now
        state = new
    assert ca_renewals == 2
    assert leaf_renewals >= 20


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ip_addresses": ["10.0.0.300"]}, "not an IP address"),
        ({"dns_names": ["has space"]}, "not a DNS name"),
        ({"dns_names": ["a..b"]}, "not a DNS name"),
        ({"dns_names": ["-leading.example"]}, "not a DNS name"),
        ({"dns_names": ["under_score.example"]}, "not a DNS name"),
        ({"dns_names": []}, "at least one DNS name"),
        ({"days": 0}, "at least one day"),
        ({"days": 400, "ca_days": 365}, "cannot outlive"),
    ],
)
def test_bad_input_is_a_clear_value_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        at(Stored(), START, **overrides)
