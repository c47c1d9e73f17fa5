"""Headers as they go on the wire, signed and checked by an independent verifier (dkimpy).

`wire()` is aiosmtplib's own transformation of the DATA payload (what the relay receives):
a message signed over different bytes than these fails DKIM at the receiver.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import dkim
import pytest
from aiosmtplib.protocol import normalize_message_line_endings as wire
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from penguinmails.common.db.ledger import CampaignPlan, Relay
from penguinmails.common.dkim.keys import DkimKey, KeyState, generate_private_key
from penguinmails.common.dkim.signer import DkimSigner
from penguinmails.sender.headers import LINE_LIMIT, SOFT_LIMIT, mailbox, unstructured
from penguinmails.sender.render import MessageParts, Renderer, RenderError

DOMAIN = "example.com"
CAMPAIGN = uuid.UUID("12345678-1234-5678-1234-567812345678")
FRENCH = "Découvrez notre offre exceptionnelle pour les écoles françaises!"


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


def plan(**changes: object) -> CampaignPlan:
    base: dict[str, object] = {
        "from_address": f"jane@{DOMAIN}",
        "from_name": "Jane Doe",
        "subject": "{{ subject }}",
        "text": "Hello {{ first_name }}",
        "domain": DOMAIN,
        "dkim_secret": "example-dkim",
        "unsubscribe_url": "https://u.example.com/u",
        "unsubscribe_mailto": f"unsubscribe@{DOMAIN}",
        "postal_address": "1 Penguin Way, Iceberg",
        "relays": [Relay(name="r", host="127.0.0.1", port=25)],
    }
    return CampaignPlan.model_validate(base | changes)


def render(p: CampaignPlan, **fields: object) -> bytes:
    parts = MessageParts(7, CAMPAIGN, "bob@dest.test", {"first_name": "Bob", **fields}, "ut", "bt")
    return Renderer(p).render(parts)


def decoded(raw: bytes, name: str) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return str(message[name])


def assert_wire_form(raw: bytes) -> None:
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    for line in raw.split(b"\r\n"):
        assert len(line) <= LINE_LIMIT
    for line in head.split(b"\r\n"):
        # Encoded-words are at most 75 characters (RFC 2047 2).
        for word in line.split():
            if word.startswith(b"=?"):
                assert len(word) <= 75, word


def test_long_french_subject_verifies_after_the_wire(keys: list[DkimKey]) -> None:
    # Reproduction of issue 10: 64 characters of French were folded with a bare LF, signed
    # as such, and sent as CRLF: the receiver's DKIM check failed.
    assert len(FRENCH) == 64
    signed = DkimSigner.from_dkim_keys(DOMAIN, keys).sign(render(plan(), subject=FRENCH))
    on_wire = wire(signed)
    assert on_wire == signed  # nothing changes between signing and the relay
    assert_wire_form(on_wire)
    checker = dkim.DKIM(on_wire)
    assert checker.verify(idx=0, dnsfunc=dns(keys)) and checker.verify(idx=1, dnsfunc=dns(keys))
    assert decoded(on_wire, "Subject") == FRENCH


def test_long_ascii_subject_is_folded_under_78_where_it_can() -> None:
    subject = " ".join(f"word{i}" for i in range(250))  # ~1,700 characters
    raw = render(plan(), subject=subject)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= SOFT_LIMIT
    assert decoded(raw, "Subject") == subject
    # One 1,200-character word cannot be folded at whitespace: it becomes encoded-words.
    long_word = "x" * 1200
    raw = render(plan(), subject=f"a {long_word} b")
    assert_wire_form(raw)
    assert decoded(raw, "Subject") == f"a {long_word} b"


def test_controls_from_contact_fields_never_reach_headers() -> None:
    for control in ["\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\t"]:
        raw = render(plan(subject="Hi {{ first_name }}!"), first_name=f"Bo{control}b")
        head = raw.split(b"\r\n\r\n", 1)[0].decode()
        assert control not in head
        assert decoded(raw, "Subject") == "Hi Bo b!"
    with pytest.raises(RenderError, match="several lines"):
        render(plan(subject="Hi {{ first_name }}"), first_name="x\r\nBcc: evil@x.test")
    with pytest.raises(RenderError, match="control characters"):
        Renderer(plan()).render(
            MessageParts(
                1,
                CAMPAIGN,
                "bob@dest.test\x0bBcc: e@x",
                {"subject": "Hi", "first_name": "B"},
                "u",
                "b",
            )
        )


def test_long_display_name_gives_short_encoded_words(keys: list[DkimKey]) -> None:
    name = "Équipe commerciale de l'Association des Pingouins Francophones du Québec"
    raw = render(plan(from_name=name, reply_to=f"reply@{DOMAIN}"), subject="Bonjour")
    assert_wire_form(raw)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"].addresses[0].display_name == name
    assert message["From"].addresses[0].addr_spec == f"jane@{DOMAIN}"
    signed = DkimSigner.from_dkim_keys(DOMAIN, keys).sign(raw)
    assert dkim.DKIM(signed).verify(dnsfunc=dns(keys))


def test_special_characters_in_ascii_display_name_are_quoted() -> None:
    field = mailbox("From", 'Jane "JD" Doe, Sales', "jane@example.com")
    message = email.message_from_string(field + "\r\n", policy=email.policy.default)
    assert message["From"].addresses[0].display_name == 'Jane "JD" Doe, Sales'


def test_ascii_that_looks_encoded_is_encoded() -> None:
    field = unstructured("Subject", "=?utf-8?q?not_an_encoded_word?=")
    message = email.message_from_string(field + "\r\n", policy=email.policy.default)
    assert str(message["Subject"]) == "=?utf-8?q?not_an_encoded_word?="


def test_reply_to_cc_and_mime_headers_are_over_signed(keys: list[DkimKey]) -> None:
    signed = DkimSigner.from_dkim_keys(DOMAIN, keys[:1]).sign(
        render(plan(reply_to=f"reply@{DOMAIN}"), subject="Hi")
    )
    header = signed.split(b"\r\n\r\n")[0].decode()
    h_tag = "".join(header.split()).split("h=")[1].split(";")[0].split(":")
    for name in ["reply-to", "content-type", "mime-version", "message-id"]:
        assert h_tag.count(name) == 2, name  # present once, over-signed once
    assert h_tag.count("cc") == 1  # absent: listed once, so none can be added
    for added in [b"Cc: victim@x.test\r\n", b"Reply-To: evil@x.test\r\n", b"MIME-Version: 1.0\r\n"]:
        tampered = signed.replace(b"\r\n\r\n", b"\r\n" + added.rstrip(b"\r\n") + b"\r\n\r\n", 1)
        assert not dkim.DKIM(tampered).verify(dnsfunc=dns(keys)), added


def test_html_only_campaign_gets_a_text_part() -> None:
    html = (
        "<html><head><style>p{color:red}</style></head><body><h1>Hello {{ first_name }}</h1>"
        '<p>See <a href="https://example.com/offer">our offer</a> &amp; more.</p></body></html>'
    )
    raw = render(plan(text=None, html=html), subject="Hi")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in message.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    text = next(message.iter_parts()).get_content()
    assert "Hello Bob" in text and "our offer (https://example.com/offer) & more." in text
    assert "color:red" not in text and "1 Penguin Way" in text


def test_bare_line_endings_are_signed_as_they_will_be_sent(keys: list[DkimKey]) -> None:
    message = b"From: a@example.com\nSubject: x\n\thello\r\n\r\nbody\rline\n"
    signed = DkimSigner.from_dkim_keys(DOMAIN, keys).sign(message)
    assert wire(signed) == signed
    assert dkim.DKIM(signed).verify(idx=0, dnsfunc=dns(keys))
    with pytest.raises(ValueError, match="bare CR or LF"):
        DkimSigner.from_dkim_keys(DOMAIN, keys).signature_headers(message)


# Text a contact or a campaign author could produce: any Unicode (controls included) but the
# line breaks the renderer refuses outright.
_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=300,
)


# Derandomized: CI explores the same 60 examples on every run, so a red run is a real
# regression and not a new draw (drop derandomize locally to explore further).
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    subject=_TEXT,
    from_name=st.one_of(st.none(), _TEXT),
    reply_to=st.booleans(),
    text=st.booleans(),
    html=st.booleans(),
)
def test_every_header_combination_verifies_with_dkimpy(
    keys: list[DkimKey],
    subject: str,
    from_name: str | None,
    reply_to: bool,
    text: bool,
    html: bool,
) -> None:
    if not (text or html):
        text = True
    p = plan(
        from_name=from_name,
        reply_to=f"reply@{DOMAIN}" if reply_to else None,
        text="Hi {{ first_name }}" if text else None,
        html="<p>Hi {{ first_name }}</p>" if html else None,
    )
    signed = DkimSigner.from_dkim_keys(DOMAIN, keys).sign(render(p, subject=subject))
    on_wire = wire(signed)
    assert on_wire == signed
    assert_wire_form(on_wire)
    checker = dkim.DKIM(on_wire)
    assert checker.verify(idx=0, dnsfunc=dns(keys)), "RSA-2048"
    assert checker.verify(idx=1, dnsfunc=dns(keys)), "Ed25519"
    # What a reader must see: the rendered subject (trimmed), controls as spaces, one space
    # between words.
    controls = str.maketrans({c: " " for c in [*map(chr, range(32)), *map(chr, range(127, 160))]})
    expected = " ".join(
        subject.strip().translate(controls).replace("\u2028", " ").replace("\u2029", " ").split(" ")
    )
    while "  " in expected:
        expected = expected.replace("  ", " ")
    assert _unfold_decode(on_wire, "Subject") == expected.strip()


def _unfold_decode(raw: bytes, name: str) -> str:
    """The header's text as a reader shows it (RFC 2047 decoded), with the legacy parser,
    which does not normalize anything beyond decoding."""
    value = email.message_from_bytes(raw)[name] or ""
    return str(email.header.make_header(email.header.decode_header(value)))
