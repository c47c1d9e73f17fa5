"""Replies without a database: which messages are auto-replies, which of our Message-IDs a
reply answers, and which tokens name a tenant's reply address."""

from __future__ import annotations

import uuid

import pytest

from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import TokenPurpose, make_token
from penguinmails.sender.bounces import token_from_address
from penguinmails.sender.replies import (
    MessageRef,
    is_auto_reply,
    parse,
    referenced_messages,
    reply_address,
    reply_tenant,
)

KEYS = MasterKeys.parse("replies-unit-master-key")
UID = uuid.UUID("0123456789abcdef0123456789abcdef")
OURS = f"<{UID.hex}.42@Sender.Example>"


def _message(headers: str) -> bytes:
    return (headers.strip() + "\r\nSubject: Re: hi\r\n\r\nyes\r\n").encode()


@pytest.mark.parametrize(
    ("headers", "auto"),
    [
        ("Auto-Submitted: auto-replied", True),
        ("Auto-Submitted: auto-generated; owner-email=x@y.test", True),
        ("Auto-Submitted: no", False),
        ("Auto-Submitted: No", False),
        ("X-Autoreply: yes", True),
        ("X-Autorespond: On vacation", True),
        ("Precedence: bulk", True),
        ("Precedence: auto_reply", True),
        ("Precedence: junk", True),
        ("Precedence: first-class", False),
        ("From: bob@dest.test", False),
    ],
)
def test_auto_replies_are_recognised(headers: str, auto: bool) -> None:
    assert is_auto_reply(parse(_message(headers))) is auto


def test_in_reply_to_first_then_references_newest_first() -> None:
    other = f"<{uuid.UUID(int=7).hex}.9@other.example>"
    raw = _message(f"In-Reply-To: {OURS}\r\nReferences: <a@x.test> {other}\r\n {OURS} <b@y.test>")
    refs = referenced_messages(parse(raw))
    assert refs == [
        MessageRef(UID, 42, "sender.example"),
        MessageRef(uuid.UUID(int=7), 9, "other.example"),
    ]


def test_foreign_and_malformed_ids_name_nothing() -> None:
    raw = _message(
        "In-Reply-To: <CAF=abc@mail.gmail.test>\r\n"
        f"References: <{UID.hex}.x@s.example> <{UID.hex[:30]}.1@s.example> <nothing>"
    )
    assert referenced_messages(parse(raw)) == []


def test_only_a_reply_token_names_a_tenant() -> None:
    tenant = uuid.uuid4()
    address = reply_address(KEYS.token_key(tenant), tenant, "Intake.Example")
    assert address.startswith("replies+") and address.endswith("@intake.example")
    assert reply_tenant(KEYS, token_from_address(address)) == tenant
    # A bounce token (which every message's return-path carries) is not a reply address's,
    # nor is a reply-purpose token naming a delivery.
    bounce = make_token(KEYS.token_key(tenant), TokenPurpose.BOUNCE, tenant, 0)
    assert reply_tenant(KEYS, bounce) is None
    assert (
        reply_tenant(KEYS, make_token(KEYS.token_key(tenant), TokenPurpose.REPLY, tenant, 5))
        is None
    )
    assert reply_tenant(KEYS, None) is None
    assert reply_tenant(KEYS, "a" * 56) is None
