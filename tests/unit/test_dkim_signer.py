"""The cryptography-based DKIM signer, checked by an independent verifier (dkimpy)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import dkim
import pytest

from penguinmails.common.dkim.keys import DkimKey, KeyState, generate_private_key
from penguinmails.common.dkim.signer import (
    DkimSigner,
    canonicalize_body_relaxed,
    canonicalize_header_relaxed,
)

DOMAIN = "example.com"
MESSAGE = (
    b"From: Jane <jane@example.com>\r\n"
    b"To: bob@dest.test\r\n"
    b"Subject:  Hello   there\r\n\tfolded line\r\n"
    b"Date: Sun, 29 Nov 2026 21:00:00 +0000\r\n"
    b"Message-ID: <a.1@example.com>\r\n"
    b"List-Unsubscribe: <https://u.test/u/tok>, <mailto:unsubscribe+tok@example.com>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello  world \r\n\r\n\r\n"
)


@pytest.fixture(scope="module")
def keys() -> list[DkimKey]:
    now = datetime.now(UTC)
    return [
        DkimKey("rsa1", "rsa2048", KeyState.ACTIVE, now, generate_private_key("rsa2048")),
        DkimKey("ed1", "ed25519", KeyState.ACTIVE, now, generate_private_key("ed25519")),
    ]


def dns(keys: list[DkimKey]) -> Callable[..., bytes | None]:
    records = {f"{k.selector}._domainkey.{DOMAIN}.".encode(): k.dns_value().encode() for k in keys}
    return lambda name, timeout=5: records.get(name)


def test_both_signatures_verify_with_dkimpy(keys: list[DkimKey]) -> None:
    signed = DkimSigner.from_dkim_keys(DOMAIN, keys).sign(MESSAGE)
    verifier = dkim.DKIM(signed)
    assert verifier.verify(idx=0, dnsfunc=dns(keys))
    assert verifier.verify(idx=1, dnsfunc=dns(keys))
    assert b"a=rsa-sha256" in signed and b"a=ed25519-sha256" in signed


def test_unsubscribe_headers_are_signed_and_cannot_be_added(keys: list[DkimKey]) -> None:
    signed = DkimSigner.from_dkim_keys(DOMAIN, keys[:1]).sign(MESSAGE)
    header = signed.split(b"\r\n\r\n")[0].decode()
    h_tag = "".join(header.split()).split("h=")[1].split(";")[0].split(":")
    assert h_tag.count("list-unsubscribe") == 2  # present once, over-signed once
    assert h_tag.count("list-unsubscribe-post") == 2
    # A second List-Unsubscribe added on the way breaks the signature.
    tampered = signed.replace(
        b"List-Unsubscribe-Post:",
        b"List-Unsubscribe: <https://evil.test/>\r\nList-Unsubscribe-Post:",
    )
    assert not dkim.DKIM(tampered).verify(dnsfunc=dns(keys))


def test_body_change_breaks_the_signature(keys: list[DkimKey]) -> None:
    signed = DkimSigner.from_dkim_keys(DOMAIN, keys).sign(MESSAGE)
    tampered = signed.replace(b"Hello  world", b"Hello  World")
    with pytest.raises(dkim.ValidationError):
        dkim.DKIM(tampered).verify(dnsfunc=dns(keys))


def test_relaxed_canonicalization_matches_rfc6376_example() -> None:
    # RFC 6376 section 3.4.5.
    assert canonicalize_header_relaxed(b"A", b" X\r\n") == b"a:X\r\n"
    assert canonicalize_header_relaxed(b"B ", b" Y\t\r\n\tZ  \r\n") == b"b:Y Z\r\n"
    assert canonicalize_body_relaxed(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert canonicalize_body_relaxed(b"") == b""


def test_refuses_to_sign_without_keys() -> None:
    with pytest.raises(ValueError, match="no DKIM key"):
        DkimSigner(DOMAIN, [])
