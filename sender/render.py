"""Render one message: sandboxed templates, CAN-SPAM footer, RFC 8058 headers, stable ids.

Templates see the contact's fields, `email`, `unsubscribe_url` and `postal_address`. They run
in Jinja2's `SandboxedEnvironment` (no attribute access to Python internals, no imports) with
`StrictUndefined`: a field the contact does not have raises `RenderError`, which fails that one
delivery with the field's name instead of sending "Hi ," or stopping the campaign.

Templates are untrusted: `sender/sandbox.py` bounds each rendered field to `MAX_OUTPUT_CHARS`
characters and `RENDER_SECONDS` of rendering. A template that exceeds a limit on its own (it
does so with any contact, e.g. `{{ 'x' * 10**9 }}`) is found when the campaign is loaded, by a
trial render with placeholder fields: `Renderer()` raises `RenderError`, a campaign-level fault
(the sender pauses the campaign, reason `SenderFault`). One that exceeds it only with some
contact's fields fails that delivery, like a missing field.
"""

from __future__ import annotations

import binascii
import functools
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    Template,
    TemplateError,
    Undefined,
    UndefinedError,
)

from penguinmails.common.db.ledger import CampaignPlan
from penguinmails.sender.headers import mailbox, structured, unstructured
from penguinmails.sender.htmltext import html_to_text
from penguinmails.sender.sandbox import BoundedEnvironment, TemplateLimitError, render_limited

__all__ = [
    "MAX_OUTPUT_CHARS",
    "RENDER_SECONDS",
    "Content",
    "Identity",
    "MessageParts",
    "RenderError",
    "Renderer",
    "Templates",
    "message_id",
]

# Per rendered field (subject, text, html). Far above any real email (relays refuse messages
# over 10 to 50 MB, and a legitimate template renders in milliseconds), far below what would
# hurt the sender: rendering runs on its event loop.
MAX_OUTPUT_CHARS = 1_000_000
RENDER_SECONDS = 1.0


class RenderError(ValueError):
    """A template could not be rendered for one contact; the message says why, and `field`
    names the template at fault (subject, text or html) when it is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Content:
    """One message's rendered subject and bodies, footers included (what the recipient reads)."""

    subject: str
    text: str | None
    html: str | None


@dataclass(frozen=True)
class MessageParts:
    """What the renderer needs to know about one delivery besides the campaign."""

    delivery_id: int
    campaign_uid: uuid.UUID
    to: str
    fields: dict[str, Any]
    unsubscribe_token: str
    bounce_token: str


@dataclass(frozen=True)
class Identity:
    """Who a message is from: its From header (as it goes on the wire) and its domain (DKIM
    d=, Message-ID, Feedback-ID and return path). One per mailbox of a rotating campaign."""

    from_header: str
    domain: str

    @classmethod
    def of(cls, display_name: str | None, address: str, domain: str) -> Identity:
        try:
            return cls(mailbox("From", display_name, address), domain)
        except ValueError as error:
            raise RenderError(f"from address {address!r}: {error}") from error


def message_id(campaign_uid: uuid.UUID, delivery_id: int, domain: str) -> str:
    """Same for every attempt of a delivery, so a re-send after a crash is recognisable."""
    return f"<{campaign_uid.hex}.{delivery_id}@{domain}>"


def return_path(domain: str, bounce_token: str) -> str:
    """VERP return-path at the sending mailbox's domain: the bounce names its delivery
    without any lookup."""
    return f"bounces+{bounce_token}@{domain}"


class Templates:
    """A campaign's subject and body templates compiled in the bounded sandbox, with the
    footer every message gets: the sender renders its messages with it, the API its previews
    (one way to render)."""

    def __init__(
        self,
        subject: str,
        text: str | None,
        html: str | None,
        *,
        unsubscribe_url: str,
        postal_address: str,
    ) -> None:
        self.postal_address = postal_address
        self._subject = self._compile("subject", subject, StrictUndefined)
        self._text = self._compile("text", text, StrictUndefined) if text else None
        self._html = self._compile("html", html, StrictUndefined) if html else None
        self._trial_render(subject, text, html, unsubscribe_url)

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _compile(field: str, source: str, undefined: type[Undefined]) -> Template:
        """Cached: the sender reloads a campaign every minute, and its templates rarely
        change (rendering is synchronous, so one compiled template serves every reload)."""
        env = BoundedEnvironment(
            max_chars=MAX_OUTPUT_CHARS,
            seconds=RENDER_SECONDS,
            undefined=undefined,
            autoescape=field == "html",
        )
        try:
            return env.from_string(source)
        except TemplateError as error:
            raise RenderError(
                f"template field {field!r} does not compile: {error}", field
            ) from error

    def _trial_render(
        self, subject: str, text: str | None, html: str | None, unsubscribe_url: str
    ) -> None:
        """Render each template once with placeholder fields (any name is an empty value):
        a template over a limit whatever the contact is the campaign's fault, found now."""
        for field, source in (("subject", subject), ("text", text), ("html", html)):
            if source:
                fault = _trial_fault(field, source, unsubscribe_url, self.postal_address)
                if fault is not None:
                    raise RenderError(fault, field)

    def render(self, to: str, fields: dict[str, Any], unsubscribe_url: str) -> Content:
        """The subject and bodies for one contact, with the CAN-SPAM footer (postal address,
        unsubscribe link); an HTML-only template gets a text part made from its HTML."""
        context = {
            **fields,
            "email": to,
            "unsubscribe_url": unsubscribe_url,
            "postal_address": self.postal_address,
        }
        subject = self._render("subject", self._subject, context).strip()
        text = self._render("text", self._text, context) if self._text else None
        html = self._render("html", self._html, context) if self._html else None
        if "\n" in subject or "\r" in subject:
            raise RenderError("the rendered subject spans several lines", "subject")
        if text is None and html is not None:
            text = html_to_text(html)  # an HTML-only message is a spam signal
        text_footer = f"\n\n--\n{self.postal_address}\nUnsubscribe: {unsubscribe_url}\n"
        html_footer = (
            '<hr><p style="font-size:12px;color:#666">'
            f"{_escape(self.postal_address)}<br>"
            f'<a href="{_escape(unsubscribe_url)}">Unsubscribe</a></p>'
        )
        return Content(
            subject,
            text.rstrip() + text_footer if text is not None else None,
            _append_html(html, html_footer) if html is not None else None,
        )

    @staticmethod
    def _render(field: str, template: Template, context: dict[str, Any]) -> str:
        try:
            return render_limited(template, context)
        except UndefinedError as error:
            raise RenderError(f"contact field missing: {error.message}", field) from error
        except TemplateLimitError as error:
            raise RenderError(f"template field {field!r}: {error.message}", field) from error
        except TemplateError as error:
            raise RenderError(
                f"template field {field!r}: template error: {error}", field
            ) from error
        except (ArithmeticError, ValueError, TypeError, LookupError, RecursionError) as error:
            # `{{ 1 / 0 }}`, `{{ 'a' + 1 }}`, a macro calling itself: the template's bug, this
            # delivery's failure, not the sender's.
            raise RenderError(f"template field {field!r}: {error!r}", field) from error


class Renderer:
    """Compiled templates of one campaign plan; `render()` builds the message bytes."""

    def __init__(self, plan: CampaignPlan) -> None:
        self.plan = plan
        self.templates = Templates(
            plan.subject,
            plan.text,
            plan.html,
            unsubscribe_url=self.unsubscribe_url("trial"),
            postal_address=plan.postal_address,
        )
        try:
            self.identity = Identity(
                mailbox("From", plan.from_name, plan.from_address), plan.domain
            )
            self._reply_to = mailbox("Reply-To", None, plan.reply_to) if plan.reply_to else ""
        except ValueError as error:
            raise RenderError(str(error)) from error

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.plan.unsubscribe_url.rstrip('/')}/{token}"

    def render(
        self, parts: MessageParts, *, now: datetime | None = None, identity: Identity | None = None
    ) -> bytes:
        """The message bytes; from `identity` (a rotation mailbox), else from spec.from."""
        plan = self.plan
        sender = identity or self.identity
        url = self.unsubscribe_url(parts.unsubscribe_token)
        content = self.templates.render(parts.to, parts.fields, url)

        mailto = plan.unsubscribe_mailto
        local, _, domain = mailto.partition("@")
        try:
            to = mailbox("To", None, parts.to)
        except ValueError as error:
            raise RenderError(f"contact address: {error}") from error
        head = "".join(
            (
                sender.from_header,
                to,
                self._reply_to,
                unstructured("Subject", content.subject),
                f"Date: {format_datetime(now) if now else _date_now()}\r\n",
                structured(
                    "Message-ID",
                    [message_id(parts.campaign_uid, parts.delivery_id, sender.domain)],
                ),
                structured(
                    "List-Unsubscribe",
                    [
                        f"<{url}>,",
                        f"<mailto:{local}+{parts.unsubscribe_token}@{domain}?subject=unsubscribe>",
                    ],
                ),
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                structured("Feedback-ID", [f"{parts.campaign_uid.hex[:12]}:{sender.domain}"]),
                "MIME-Version: 1.0\r\n",
            )
        )
        bodies: list[tuple[str, str]] = []
        if content.text is not None:
            bodies.append(("text/plain", content.text))
        if content.html is not None:
            bodies.append(("text/html", content.html))
        if len(bodies) == 1:
            kind, body = bodies[0]
            encoding, encoded = _encode(body)
            return (head + _part_headers(kind, encoding)).encode() + b"\r\n" + encoded
        # Deterministic boundary: the same delivery renders to the same bytes (but for Date).
        boundary = f"=_pm_{parts.campaign_uid.hex[:16]}_{parts.delivery_id}"
        out = [
            (head + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n').encode()
        ]
        for kind, body in bodies:
            encoding, encoded = _encode(body)
            out.append(f"--{boundary}\r\n{_part_headers(kind, encoding)}\r\n".encode())
            out.append(encoded + b"\r\n")
        out.append(f"--{boundary}--\r\n".encode())
        return b"".join(out)


@functools.lru_cache(maxsize=64)
def _trial_fault(field: str, source: str, unsubscribe_url: str, postal_address: str) -> str | None:
    """Why `source` is over a limit with any contact, or None. Cached: until the pause takes
    effect, every delivery already claimed loads the campaign again, and a template that runs
    out of time would hold the event loop for its full time limit each time."""
    context = {
        "email": "trial@example.com",
        "unsubscribe_url": unsubscribe_url,
        "postal_address": postal_address,
    }
    try:
        render_limited(Templates._compile(field, source, ChainableUndefined), context)
    except TemplateLimitError as error:
        return f"template field {field!r}: {error.message}"
    except Exception:  # noqa: S110 (placeholders can break valid templates)
        pass  # anything else depends on the contact: render() reports it per delivery
    return None


@functools.lru_cache(maxsize=2)
def _date_at(second: int) -> str:
    return format_datetime(datetime.fromtimestamp(second, UTC))


def _date_now() -> str:
    """The Date header's value for now, formatted once per second (the header has whole
    seconds; formatting it cost as much as rendering a short template, per message)."""
    return _date_at(int(time.time()))


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _append_html(html: str, footer: str) -> str:
    index = html.lower().rfind("</body>")
    return html[:index] + footer + html[index:] if index >= 0 else html + footer


def _part_headers(kind: str, encoding: str) -> str:
    return f'Content-Type: {kind}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n'


_7BIT_LINE = 998 - 2
"""Characters a 7bit body line may have besides its CRLF (RFC 5322 2.1.1, RFC 2045 2.7)."""


def _encode(content: str) -> tuple[str, bytes]:
    """The part's transfer encoding and its bytes, with CRLF line ends: `7bit` when the text
    is ASCII with lines a 7bit body may carry (most cold e-mail: nothing to encode, and
    quoted-printable was the largest cost of rendering), else quoted-printable (lines under
    76 characters)."""
    normalized = content.replace("\r\n", "\n").replace("\r", "\n")
    if normalized.isascii() and "\0" not in normalized:
        lines = normalized.split("\n")
        if max(map(len, lines)) <= _7BIT_LINE:
            body = "\r\n".join(lines).encode("ascii")
            return "7bit", body if body.endswith(b"\r\n") else body + b"\r\n"
    encoded = binascii.b2a_qp(normalized.encode("utf-8"), istext=True)
    crlf = encoded.replace(b"\n", b"\r\n") + (b"" if encoded.endswith(b"\n") else b"\r\n")
    return "quoted-printable", crlf
