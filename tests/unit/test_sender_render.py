"""Rendering: sandboxed templates, per-contact failures, footer and RFC 8058 headers."""

from __future__ import annotations

import email
import uuid

import pytest

from penguinmails.common.db.ledger import CampaignPlan, Relay
from penguinmails.sender.render import MessageParts, Renderer, RenderError, message_id

CAMPAIGN = uuid.UUID("12345678-1234-5678-1234-567812345678")


def plan(**changes: object) -> CampaignPlan:
    base: dict[str, object] = {
        "from_address": "jane@example.com",
        "from_name": "Jane Doe",
        "subject": "Hi {{ first_name }}",
        "text": "Hello {{ first_name }} from {{ company }}",
        "html": "<html><body><p>Hello {{ first_name }}</p></body></html>",
        "domain": "example.com",
        "dkim_secret": "example-dkim",
        "unsubscribe_url": "https://u.example.com/u",
        "unsubscribe_mailto": "unsubscribe@example.com",
        "postal_address": "1 Penguin Way, Iceberg",
        "relays": [Relay(name="r", host="127.0.0.1", port=25)],
    }
    return CampaignPlan.model_validate(base | changes)


def parts(fields: dict[str, object], delivery_id: int = 7) -> MessageParts:
    return MessageParts(delivery_id, CAMPAIGN, "bob@dest.test", fields, "utok", "btok")


def test_message_has_footer_unsubscribe_headers_and_stable_id() -> None:
    raw = Renderer(plan()).render(parts({"first_name": "Bob", "company": "Acme"}))
    message = email.message_from_bytes(raw)
    assert message["Subject"] == "Hi Bob"
    assert message["List-Unsubscribe"].replace("\r\n", "") == (
        "<https://u.example.com/u/utok>, <mailto:unsubscribe+utok@example.com?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"] == message_id(CAMPAIGN, 7, "example.com")
    text, html = (
        bytes(part.get_payload(decode=True)).decode()
        for part in message.get_payload()
        if isinstance(part, email.message.Message)
    )
    assert "Hello Bob from Acme" in text and "1 Penguin Way, Iceberg" in text
    assert "https://u.example.com/u/utok" in text
    assert html.index("Unsubscribe") < html.index("</body>")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_missing_field_fails_only_that_delivery_with_its_name() -> None:
    renderer = Renderer(plan())
    with pytest.raises(RenderError, match="company"):
        renderer.render(parts({"first_name": "Bob"}))
    assert renderer.render(parts({"first_name": "Ann", "company": "X"}))


def test_templates_cannot_reach_python_internals() -> None:
    renderer = Renderer(plan(subject="{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    with pytest.raises(RenderError):
        renderer.render(parts({"first_name": "Bob", "company": "X"}))


def test_html_fields_are_escaped_and_subject_cannot_inject_headers() -> None:
    raw = Renderer(plan()).render(parts({"first_name": "<script>", "company": "X"}))
    assert b"<script>" not in raw.split(b"text/html")[1]
    with pytest.raises(RenderError, match="several lines"):
        Renderer(plan()).render(parts({"first_name": "x\r\nBcc: evil@x.test", "company": "X"}))


def test_non_ascii_subject_is_encoded() -> None:
    raw = Renderer(plan()).render(parts({"first_name": "Zoë", "company": "X"}))
    header = email.message_from_bytes(raw)["Subject"]
    assert "=?utf-8?" in header
    assert str(email.header.make_header(email.header.decode_header(header))) == "Hi Zoë"
