"""The access-token key ring: rotation, refusals, and errors that never echo a key."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import pytest

from penguinmails.api.http.tokens import InvalidToken, SigningKeyRing, new_signing_key

USER, FAMILY = uuid.uuid4(), uuid.uuid4()


def test_rotation_keeps_tokens_of_the_previous_key_until_it_is_dropped() -> None:
    old, new = new_signing_key("2026-06"), new_signing_key("2026-12")
    before = SigningKeyRing.parse(old)
    token = before.issue(USER, FAMILY, timedelta(minutes=5))
    during = SigningKeyRing.parse(f"{new},{old}")  # the new key first: it signs from now on
    assert during.current == "2026-12"
    assert during.verify(token).user_id == USER
    fresh = during.issue(USER, FAMILY, timedelta(minutes=5))
    after = SigningKeyRing.parse(new)
    assert after.verify(fresh).family_id == FAMILY
    with pytest.raises(InvalidToken):
        after.verify(token)
    assert [k["kid"] for k in during.jwks()["keys"]] == ["2026-12", "2026-06"]


def test_unsigned_and_expired_tokens_are_refused() -> None:
    ring = SigningKeyRing.parse(new_signing_key("k"))
    token = ring.issue(USER, FAMILY, timedelta(minutes=5))
    header, payload, _ = token.split(".")
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "k"}).encode()).rstrip(
        b"="
    )
    for forged in (f"{none_header.decode()}.{payload}.", f"{header}.{payload}."):
        with pytest.raises(InvalidToken):
            ring.verify(forged)
    with pytest.raises(InvalidToken):
        ring.verify(ring.issue(USER, FAMILY, timedelta(seconds=-61)))


@pytest.mark.parametrize(
    "text",
    ["", "nokid", "k:not-base64!!", "k:" + base64.b64encode(b"short").decode(), "a b:AAAA"],
)
def test_malformed_rings_are_refused_without_echoing_the_entry(text: str) -> None:
    with pytest.raises(ValueError, match="PM_API_SIGNING_KEYS") as caught:
        SigningKeyRing.parse(text)
    secret_part = text.partition(":")[2]
    assert not secret_part or secret_part not in str(caught.value)


def test_a_key_id_twice_is_refused() -> None:
    entry = new_signing_key("same")
    with pytest.raises(ValueError, match="appears twice"):
        SigningKeyRing.parse(f"{entry},{new_signing_key('same')}")
