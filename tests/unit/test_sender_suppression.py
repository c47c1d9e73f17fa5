"""Suppression hashes and the tokens in unsubscribe URLs and return-paths."""

from __future__ import annotations

import base64
import hmac
import io
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from penguinmails.common.db.contacts import ParsedContact, RowError, parse_contacts
from penguinmails.common.keys import MasterKeys, TokenKey
from penguinmails.common.suppression import (
    TOKEN_LENGTH,
    TokenPurpose,
    address_hash,
    make_token,
    normalize_address,
    read_token,
)

KEY = b"platform-key"


def parsed(data: bytes) -> tuple[list[ParsedContact], list[RowError]]:
    items = list(parse_contacts(io.BytesIO(data), KEY))
    return (
        [i for i in items if isinstance(i, ParsedContact)],
        [i for i in items if isinstance(i, RowError)],
    )


KEYS = MasterKeys.parse("p" * 32)


def test_hash_matches_case_and_idn_variants_and_depends_on_the_key() -> None:
    assert address_hash(KEY, " Jane@Example.COM ") == address_hash(KEY, "jane@example.com")
    assert normalize_address("x@Bücher.example") == "x@xn--bcher-kva.example"
    assert address_hash(KEY, "jane@example.com") != address_hash(b"other", "jane@example.com")
    assert address_hash(KEY, "jane+tag@example.com") != address_hash(KEY, "jane@example.com")
    with pytest.raises(ValueError, match="not an e-mail address"):
        normalize_address("no-at-sign")


def test_tokens_round_trip_and_reject_forgery_and_wrong_purpose() -> None:
    tenant = uuid.uuid4()
    token = make_token(KEYS.token_key(tenant), TokenPurpose.UNSUBSCRIBE, tenant, 123456789)
    assert len(token) == TOKEN_LENGTH == 56 and token == token.lower()
    assert len(f"bounces+{token}") <= 64  # an RFC 5321 local part
    assert read_token(KEYS, TokenPurpose.UNSUBSCRIBE, token) == (tenant, 123456789)
    assert read_token(KEYS, TokenPurpose.UNSUBSCRIBE, token.upper()) == (tenant, 123456789)
    assert read_token(KEYS, TokenPurpose.BOUNCE, token) is None
    assert read_token(MasterKeys.parse("o" * 32), TokenPurpose.UNSUBSCRIBE, token) is None
    for index in (0, 1, 30, 55):  # a changed character anywhere invalidates it
        changed = "a" if token[index] != "a" else "b"
        flipped = token[:index] + changed + token[index + 1 :]
        assert read_token(KEYS, TokenPurpose.UNSUBSCRIBE, flipped) is None
    assert read_token(KEYS, TokenPurpose.UNSUBSCRIBE, "../../etc/passwd") is None


def test_tokens_are_the_documented_construction_byte_for_byte() -> None:
    """The fast paths (cached ECB context for CTR, copied HMAC, table base32) make exactly the
    tokens the format describes, so tokens minted before them are still read, and the other
    way round. The reference is written with the libraries' one-shot calls."""
    tenant = uuid.uuid4()
    key = KEYS.token_key(tenant)
    for delivery_id in (0, 1, 2**40 + 7, 2**63 - 1):
        for purpose in TokenPurpose:
            payload = tenant.bytes + delivery_id.to_bytes(8, "big")
            signed = purpose.value.encode() + bytes([key.kid]) + payload
            tag = hmac.digest(key.mac, signed, "sha256")[:10]
            ctr = Cipher(algorithms.AES(key.encryption), modes.CTR(tag + bytes(6))).encryptor()
            sealed = ctr.update(payload) + ctr.finalize()
            expected = base64.b32encode(bytes([key.kid]) + sealed + tag).decode().lower()
            assert make_token(key, purpose, tenant, delivery_id) == expected


def test_tokens_hide_the_tenant_and_one_tenant_cannot_mint_anothers() -> None:
    victim, attacker = uuid.uuid4(), uuid.uuid4()
    token = make_token(KEYS.token_key(victim), TokenPurpose.UNSUBSCRIBE, victim, 7)
    raw = base64.b32decode(token.upper())
    assert victim.bytes not in raw and victim.hex not in token
    # The attacker's sender key holds the shared encryption key but only its own MAC key.
    forged = make_token(KEYS.token_key(attacker), TokenPurpose.UNSUBSCRIBE, victim, 7)
    assert read_token(KEYS, TokenPurpose.UNSUBSCRIBE, forged) is None
    own = make_token(KEYS.token_key(attacker), TokenPurpose.UNSUBSCRIBE, attacker, 7)
    assert read_token(KEYS, TokenPurpose.UNSUBSCRIBE, own) == (attacker, 7)


def test_rotation_keeps_old_tokens_and_the_suppression_hash() -> None:
    tenant = uuid.uuid4()
    old = make_token(KEYS.token_key(tenant), TokenPurpose.BOUNCE, tenant, 1)
    rotated = MasterKeys.parse(f"2:{'n' * 32},1:{'p' * 32}")
    assert rotated.current == 2
    new = make_token(rotated.token_key(tenant), TokenPurpose.BOUNCE, tenant, 2)
    assert base64.b32decode(new.upper())[0] == 2 and base64.b32decode(old.upper())[0] == 1
    assert read_token(rotated, TokenPurpose.BOUNCE, old) == (tenant, 1)
    assert read_token(rotated, TokenPurpose.BOUNCE, new) == (tenant, 2)
    assert read_token(KEYS, TokenPurpose.BOUNCE, new) is None  # key 2 unknown before
    assert rotated.suppression_key() == KEYS.suppression_key()
    # Once key 1 leaves the ring, its tokens stop working.
    assert read_token(MasterKeys.parse(f"2:{'n' * 32}"), TokenPurpose.BOUNCE, old) is None


def test_key_ring_and_token_key_errors_name_the_fix_without_echoing_secrets() -> None:
    tenant = uuid.uuid4()
    key = KEYS.token_key(tenant)
    assert TokenKey.decode(key.encode()) == key
    assert KEYS.suppression_key() not in (key.encryption, key.mac)
    for bad, message in (
        ("", "is empty"),
        ("short", "shorter than 16"),
        (f"{'a' * 32},{'b' * 32}", "no key id"),
        (f"x:{'s' * 32}", "key id 1-255"),
        (f"1:{'a' * 32},1:{'b' * 32}", "appears twice"),
    ):
        with pytest.raises(ValueError, match=message) as caught:
            MasterKeys.parse(bad)
        assert "s" * 32 not in str(caught.value)
    with pytest.raises(ValueError, match="PM_TOKEN_KEY"):
        TokenKey.decode("1:not-base64")


def test_contact_rows_are_reported_by_line_and_skipped() -> None:
    data = (
        b"Email,first_name\n"
        b"a@x.test,A\n"
        b"not-an-address,B\n"
        b"A@X.test,dup\n"
        b'"c@x.test","multi\nline"\n'
        b"d@x.test,\xff\xfe\n"
        b"e@x.test,E,extra\n"
        b"f@x.test,F\n"
    )
    good, errors = parsed(data)
    assert [c.email for c in good] == ["a@x.test", "c@x.test", "f@x.test"]
    assert [c.line for c in good] == [2, 5, 9]
    assert good[1].fields == {"first_name": "multi\nline"}
    assert [(e.line, e.reason.split()[0]) for e in errors] == [
        (3, "malformed"),
        (4, "duplicate"),
        (7, "not"),
        (8, "3"),
    ]


def test_a_file_without_an_email_column_is_refused() -> None:
    good, errors = parsed(b"name,phone\nA,1\n")
    assert not good and errors[0].line == 1 and "no email column" in errors[0].reason
