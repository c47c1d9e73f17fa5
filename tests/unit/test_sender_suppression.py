"""Suppression hashes and the tokens in unsubscribe URLs and return-paths."""

from __future__ import annotations

import uuid

import pytest

from penguinmails.common.db.contacts import parse_contacts
from penguinmails.common.suppression import (
    TokenPurpose,
    address_hash,
    make_token,
    normalize_address,
    read_token,
)

KEY = b"platform-key"


def test_hash_matches_case_and_idn_variants_and_depends_on_the_key() -> None:
    assert address_hash(KEY, " Jane@Example.COM ") == address_hash(KEY, "jane@example.com")
    assert normalize_address("x@Bücher.example") == "x@xn--bcher-kva.example"
    assert address_hash(KEY, "jane@example.com") != address_hash(b"other", "jane@example.com")
    assert address_hash(KEY, "jane+tag@example.com") != address_hash(KEY, "jane@example.com")
    with pytest.raises(ValueError, match="not an e-mail address"):
        normalize_address("no-at-sign")


def test_tokens_round_trip_and_reject_forgery_and_wrong_purpose() -> None:
    tenant = uuid.uuid4()
    token = make_token(KEY, TokenPurpose.UNSUBSCRIBE, tenant, 123456789)
    assert len(token) == 55 and token == token.lower()
    assert read_token(KEY, TokenPurpose.UNSUBSCRIBE, token) == (tenant, 123456789)
    assert read_token(KEY, TokenPurpose.UNSUBSCRIBE, token.upper()) == (tenant, 123456789)
    assert read_token(KEY, TokenPurpose.BOUNCE, token) is None
    assert read_token(b"other", TokenPurpose.UNSUBSCRIBE, token) is None
    for index in (0, 30, 54):  # a changed character anywhere invalidates it
        changed = "a" if token[index] != "a" else "b"
        flipped = token[:index] + changed + token[index + 1 :]
        assert read_token(KEY, TokenPurpose.UNSUBSCRIBE, flipped) is None
    assert read_token(KEY, TokenPurpose.UNSUBSCRIBE, "../../etc/passwd") is None


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
    good, errors = parse_contacts(data, KEY)
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
    good, errors = parse_contacts(b"name,phone\nA,1\n", KEY)
    assert not good and errors[0].line == 1 and "no email column" in errors[0].reason
