"""Render one message: sandboxed templates, CAN-SPAM footer, RFC 8058 headers, stable ids.

Templates see the contact's fields, `email`, `unsubscribe_url` and `postal_address`. They run
in Jinja2's `SandboxedEnvironment` (no attribute access to Python internals, no imports) with
`StrictUndefined`: a field the contact does not have raises `RenderError`, which fails that one
delivery with the field's name instead of sending "Hi ," or stopping the campaign.
"""

from __future__ import annotations

import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from penguinmails.common.db.ledger import CampaignPlan
from penguinmails.sender.headers import mailbox, structured, unstructured
from penguinmails.sender.htmltext import html_to_text

__all__ = ["MessageParts", "RenderError", "Renderer", "message_id"]


class RenderError(ValueError):
    """A template could not be rendered for one contact; the message says why."""


@dataclass(frozen=True)
class MessageParts:
    """What the renderer needs to know about one delivery besides the campaign."""

    delivery_id: int
    campaign_uid: uuid.UUID
    to: str
    fields: dict[str, Any]
    unsubscribe_token: str
    bounce_token: str


def message_id(campaign_uid: uuid.UUID, delivery_id: int, domain: str) -> str:
    """Same for every attempt of a delivery, so a re-send after a crash is recognisable."""
    return f"<{campaign_uid.hex}.{delivery_id}@{domain}>"


def return_path(plan: CampaignPlan, bounce_token: str) -> str:
    """VERP return-path: the bounce names its delivery without any lookup."""
    return f"bounces+{bounce_token}@{plan.domain}"


class Renderer:
    """Compiled templates of one campaign plan; `render()` builds the message bytes."""

    def __init__(self, plan: CampaignPlan) -> None:
        self.plan = plan
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        html_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        try:
            self._subject = env.from_string(plan.subject)
            self._text = env.from_string(plan.text) if plan.text else None
            self._html = html_env.from_string(plan.html) if plan.html else None
        except TemplateError as error:
            raise RenderError(f"template does not compile: {error}") from error
        try:
            self._from = mailbox("From", plan.from_name, plan.from_address)
            self._reply_to = mailbox("Reply-To", None, plan.reply_to) if plan.reply_to else ""
        except ValueError as error:
            raise RenderError(str(error)) from error

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.plan.unsubscribe_url.rstrip('/')}/{token}"

    def render(self, parts: MessageParts, *, now: datetime | None = None) -> bytes:
        plan = self.plan
        url = self.unsubscribe_url(parts.unsubscribe_token)
        context = {
            **parts.fields,
            "email": parts.to,
            "unsubscribe_url": url,
            "postal_address": plan.postal_address,
        }
        try:
            subject = self._subject.render(context).strip()
            text = self._text.render(context) if self._text else None
            html = self._html.render(context) if self._html else None
        except UndefinedError as error:
            raise RenderError(f"contact field missing: {error.message}") from error
        except TemplateError as error:
            raise RenderError(f"template error: {error}") from error
        if "\n" in subject or "\r" in subject:
            raise RenderError("the rendered subject spans several lines")

        mailto = plan.unsubscribe_mailto
        local, _, domain = mailto.partition("@")
        try:
            to = mailbox("To", None, parts.to)
        except ValueError as error:
            raise RenderError(f"contact address: {error}") from error
        head = "".join(
            (
                self._from,
                to,
                self._reply_to,
                unstructured("Subject", subject),
                f"Date: {format_datetime(now or datetime.now(UTC))}\r\n",
                structured(
                    "Message-ID", [message_id(parts.campaign_uid, parts.delivery_id, plan.domain)]
                ),
                structured(
                    "List-Unsubscribe",
                    [
                        f"<{url}>,",
                        f"<mailto:{local}+{parts.unsubscribe_token}@{domain}?subject=unsubscribe>",
                    ],
                ),
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                structured("Feedback-ID", [f"{parts.campaign_uid.hex[:12]}:{plan.domain}"]),
                "MIME-Version: 1.0\r\n",
            )
        )
        text_footer = f"\n\n--\n{plan.postal_address}\nUnsubscribe: {url}\n"
        html_footer = (
            '<hr><p style="font-size:12px;color:#666">'
            f"{_escape(plan.postal_address)}<br>"
            f'<a href="{_escape(url)}">Unsubscribe</a></p>'
        )
        bodies: list[tuple[str, str]] = []
        if text is None and html is not None:
            text = html_to_text(html)  # an HTML-only message is a spam signal
        if text is not None:
            bodies.append(("text/plain", text.rstrip() + text_footer))
        if html is not None:
            bodies.append(("text/html", _append_html(html, html_footer)))
        if len(bodies) == 1:
            kind, content = bodies[0]
            return (head + _part_headers(kind)).encode() + b"\r\n" + _qp(content)
        # Deterministic boundary: the same delivery renders to the same bytes (but for Date).
        boundary = f"=_pm_{parts.campaign_uid.hex[:16]}_{parts.delivery_id}"
        out = [
            (head + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n').encode()
        ]
        for kind, content in bodies:
            out.append(f"--{boundary}\r\n{_part_headers(kind)}\r\n".encode())
            out.append(_qp(content) + b"\r\n")
        out.append(f"--{boundary}--\r\n".encode())
        return b"".join(out)


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _append_html(html: str, footer: str) -> str:
    index = html.lower().rfind("</body>")
    return html[:index] + footer + html[index:] if index >= 0 else html + footer


def _part_headers(kind: str) -> str:
    return (
        f'Content-Type: {kind}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
    )


def _qp(content: str) -> bytes:
    """Quoted-printable with CRLF line ends (lines stay under 76 characters)."""
    normalized = content.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(normalized.encode("utf-8"), istext=True)
    return encoded.replace(b"\n", b"\r\n") + (b"" if encoded.endswith(b"\n") else b"\r\n")
