"""DKIM keys: generation, the Secret layout, the record value, and the rotation steps."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import dkim
import pytest

from penguinmails.common.dkim.keys import (
    DkimKeyError,
    KeySet,
    KeyState,
    load_key_set,
    load_keys_from_secret,
    new_key,
    secret_data,
    selector_name,
    signing_keys,
)
from penguinmails.common.dkim.rotation import RotationPolicy, advance

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=300)
POLICY = RotationPolicy(
    algorithms=("rsa2048", "ed25519"),
    selector_prefix="pm",
    rotate_after=timedelta(days=90),
    retire_after=timedelta(days=7),
    ttl=TTL,
)
MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


def test_selectors_are_dated_and_unique_per_day() -> None:
    assert selector_name("pm", "rsa2048", T0) == "pm-rsa-20261129"
    assert selector_name("pm", "ed25519", T0, ["pm-ed-20261129"]) == "pm-ed-20261129-2"


@pytest.mark.parametrize("algorithm", ["rsa2048", "ed25519"])
def test_a_signature_verifies_against_the_published_value(algorithm: str) -> None:
    key = new_key("pm", algorithm, T0)
    record = key.dns_value().encode()
    signature = dkim.sign(
        MESSAGE,
        key.selector.encode(),
        b"example.com",
        key.dkimpy_private_key(),
        signature_algorithm=b"ed25519-sha256" if algorithm == "ed25519" else b"rsa-sha256",
    )
    assert dkim.verify(signature + MESSAGE, dnsfunc=lambda name, timeout=5: record)


def test_secret_round_trip_keeps_every_field() -> None:
    keys = advance(KeySet(), POLICY, now=T0, verified=())[0]
    loaded = load_key_set(secret_data(keys))
    assert loaded == keys
    assert [k.state for k in load_keys_from_secret(secret_data(keys))] == [KeyState.PENDING] * 2


def test_malformed_secret_is_named() -> None:
    with pytest.raises(DkimKeyError, match="malformed"):
        load_key_set({"keys.json": base64.b64encode(b"{not json").decode()})


def active_after_first_verification() -> KeySet:
    keys, _ = advance(KeySet(), POLICY, now=T0, verified=())
    selectors = {k.selector for k in keys.keys}
    keys, _ = advance(keys, POLICY, now=T0 + timedelta(seconds=1), verified=selectors)
    assert not signing_keys(keys.keys), "must not sign before one TTL after verification"
    keys, steps = advance(keys, POLICY, now=T0 + TTL + timedelta(seconds=1), verified=selectors)
    assert [s.reason for s in steps] == ["DKIMKeyActive", "DKIMKeyActive"]
    return keys


def test_rotation_goes_through_every_step_and_always_signs_with_a_served_key() -> None:
    keys = active_after_first_verification()
    first = {k.selector for k in signing_keys(keys.keys)}
    now = T0 + timedelta(days=91)

    keys, steps = advance(keys, POLICY, now=now, verified=first)
    assert [s.reason for s in steps] == ["DKIMKeyGenerated", "DKIMKeyGenerated"]
    pending = {k.selector for k in keys.keys if k.state == KeyState.PENDING}
    assert {k.selector for k in signing_keys(keys.keys)} == first  # not verified yet

    keys, _ = advance(keys, POLICY, now=now, verified=first)  # DNS still lags
    assert {k.selector for k in signing_keys(keys.keys)} == first

    keys, _ = advance(keys, POLICY, now=now, verified=first | pending)
    keys, steps = advance(keys, POLICY, now=now + TTL, verified=first | pending)
    assert [s.reason for s in steps] == ["DKIMKeyRotated", "DKIMKeyRotated"]
    assert {k.selector for k in signing_keys(keys.keys)} == pending
    retiring = [k for k in keys.keys if k.state == KeyState.RETIRING]
    assert {k.selector for k in retiring} == first
    assert all(k.private_key_pem is not None for k in retiring)

    keys, steps = advance(keys, POLICY, now=now + timedelta(days=8), verified=first | pending)
    revoked = [k for k in keys.keys if k.state == KeyState.REVOKED]
    assert {k.selector for k in revoked} == first
    assert all(k.dns_value().endswith("p=") and k.private_key_pem is None for k in revoked)

    keys, steps = advance(keys, POLICY, now=now + timedelta(days=16), verified=pending)
    assert {k.selector for k in keys.keys} == pending
    assert {s.reason for s in steps} == {"DKIMKeyRemoved"}


def test_rotate_now_token_rotates_once() -> None:
    keys = active_after_first_verification()
    now = T0 + timedelta(days=1)
    keys, steps = advance(keys, POLICY, now=now, verified=(), rotate_token="a")
    assert len(steps) == 2 and keys.rotate_token == "a"
    # The same token again is not a new request.
    pending = [k for k in keys.keys if k.state == KeyState.PENDING]
    keys, steps = advance(keys, POLICY, now=now, verified=(), rotate_token="a")
    assert steps == [] and [k for k in keys.keys if k.state == KeyState.PENDING] == pending
