"""What an SMTP reply or a bounce report means for a delivery.

* `classify(code, text)`: a reply from the relay, by its RFC 3463 enhanced status code when it
  has one, else by the basic reply code. Only a recipient-specific code (5.1.1 ...) suppresses
  the address: a bare "550 blocked" says nothing about the mailbox, and 5.7.x is about us;
* `parse_report(raw)`: a message that arrived at a return-path address: an RFC 3464 delivery
  status notification (`multipart/report; report-type=delivery-status`) or an RFC 5965 ARF
  feedback report (`report-type=feedback-report`), with the delivery token taken from the
  return-path (VERP) it was sent to.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from enum import StrEnum

from penguinmails.common.db.blocks import BlockScope

__all__ = [
    "Kind",
    "Report",
    "ReportType",
    "Verdict",
    "block_scope",
    "bounce_token",
    "classify",
    "classify_status",
    "parse_report",
    "token_from_address",
]


class Kind(StrEnum):
    SENT = "sent"
    DEFER = "defer"
    """Transient (4xx): retry with backoff."""
    HARD_BOUNCE = "hard_bounce"
    """The address does not exist or cannot receive (5.1.1/5.1.2/5.1.3/5.1.6/5.1.10/5.2.1):
    bounce and suppress that recipient only."""
    FAIL = "fail"
    """Permanent for this message, not for the address (content, size...): no retry."""
    BLOCK = "block"
    """Refused for the sending server's sake or for no stated reason: 5.7.x policy or
    reputation (5.7.1, 5.7.25 reverse DNS, Microsoft 5.7.606...) or a 5xx without an enhanced
    code ("550 blocked"). Never suppresses: it counts against the server that sent it."""
    AUTH = "auth"
    """The sending domain failed authentication (DKIM/SPF/DMARC: 5.7.20-5.7.27 but 5.7.25,
    Microsoft 5.7.515/5.7.509): every message of the domain would fail the same way, so it
    counts against the domain (its campaign pauses); never suppresses the address."""


# RFC 3463 subjects/details that mean "this mailbox will never take mail".
_HARD = {"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"}
# RFC 7372 authentication codes (5.7.25 is the sending IP's reverse DNS: the server's) and
# Microsoft's DMARC/authentication rejections.
_DOMAIN_AUTH = {f"5.7.{n}" for n in (20, 21, 22, 23, 24, 26, 27, 509, 515)}
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    code: int | None
    status: str | None
    """Enhanced status code (e.g. 5.1.1), when the reply had one."""
    text: str


def classify(code: int, text: str = "") -> Verdict:
    match = _ENHANCED.search(text[:40])
    status = ".".join(match.groups()) if match else None
    if 200 <= code < 300:
        return Verdict(Kind.SENT, code, status, text)
    if 400 <= code < 500 or (status or "").startswith("4."):
        return Verdict(Kind.DEFER, code, status, text)
    if status is None:
        # No enhanced code: receivers answer "550 blocked", "554 rejected for policy" and
        # "550 no such user" alike, so nothing here proves the mailbox is gone: never suppress.
        return Verdict(Kind.BLOCK, code, None, text)
    if status in _HARD:
        return Verdict(Kind.HARD_BOUNCE, code, status, text)
    if status in _DOMAIN_AUTH:
        return Verdict(Kind.AUTH, code, status, text)
    if status.startswith("5.7."):
        return Verdict(Kind.BLOCK, code, status, text)
    return Verdict(Kind.FAIL, code, status, text)


# What receivers say when they block the sending domain rather than the server's address:
# Gmail's "very low reputation of the sending domain", "sender domain" policies, domain
# block lists (Spamhaus DBL, URIBL, SURBL). Gmail puts the client IP in brackets even then,
# so an IP in the text says nothing.
_DOMAIN_BLOCK = re.compile(
    r"\b(?:sending|sender|from)[ -]domain\b|\bdomain\b[^.;]{0,40}\breputation"
    r"|\breputation\b[^.;]{0,40}\bdomain\b|\bdbl\.spamhaus|\buribl\b|\bsurbl\b",
    re.IGNORECASE,
)


def block_scope(text: str) -> BlockScope:
    """Whom a policy/reputation block (`Kind.BLOCK`) is about: the sending domain when the
    receiver says so, else the server that carried the message (IP block lists, "550
    blocked", Microsoft's S3150...: the usual case)."""
    return BlockScope.DOMAIN if _DOMAIN_BLOCK.search(text) else BlockScope.SERVER


def classify_status(status: str, text: str = "") -> Verdict:
    """A DSN's Status field (no reply code): 5.x.x permanent, 4.x.x transient."""
    code = 550 if status.startswith("5.") else 450 if status.startswith("4.") else 250
    return classify(code, f"{status} {text}")


class ReportType(StrEnum):
    BOUNCE = "bounce"
    DELAY = "delay"
    COMPLAINT = "complaint"


@dataclass(frozen=True)
class Report:
    type: ReportType
    token: str | None
    """Bounce token (`TokenPurpose.BOUNCE`) from the return-path the report was addressed to,
    or from the original message's headers quoted in the report. Never an unsubscribe token:
    those are in every message's List-Unsubscribe, so anybody who received one could quote it
    in a forged complaint."""
    verdict: Verdict | None
    recipient: str | None
    action: str | None = None
    """A DSN's Action (failed, delayed, delivered, relayed, expanded)."""
    feedback_type: str | None = None
    """An ARF report's Feedback-Type (abuse, fraud, virus, other...)."""


_TOKEN = re.compile(r"(?:bounces|unsubscribe|replies)\+([a-z2-7]{56})@", re.IGNORECASE)
_BOUNCE_TOKEN = re.compile(r"\bbounces\+([a-z2-7]{56})@", re.IGNORECASE)


def token_from_address(address: str) -> str | None:
    """The token of a `bounces+`, `unsubscribe+` or `replies+` address (the caller checks its
    purpose)."""
    match = _TOKEN.search(address)
    return match.group(1).lower() if match else None


def bounce_token(text: str) -> str | None:
    """The token of the first `bounces+<token>@` address in `text`."""
    match = _BOUNCE_TOKEN.search(text)
    return match.group(1).lower() if match else None


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _report_part(message: Message, content_type: str) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _fields(part: Message) -> list[Message]:
    """The field groups of a message/delivery-status or message/feedback-report part (the
    email package parses the first as a list of header blocks, the second as one block)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [
        email.message_from_string(block + "\n")
        for block in re.split(r"\r?\n\r?\n", text)
        if block.strip()
    ]


def _original_headers(message: Message) -> str:
    """The headers of the original message quoted in a report (message/rfc822 or
    text/rfc822-headers, RFC 3464 and RFC 5965 both allow either), unfolded, with encoded-words
    decoded (some reporters re-encode a long Return-Path)."""
    part = _report_part(message, "message/rfc822") or _report_part(message, "text/rfc822-headers")
    if part is None:
        return ""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        original = payload[0]
    elif isinstance(payload, str):
        original = email.message_from_string(payload, policy=email.policy.compat32)
    else:
        return ""
    lines = []
    for name, value in original.items():
        try:
            text = str(make_header(decode_header(str(value))))
        except (ValueError, LookupError):
            text = str(value)
        lines.append(f"{name}: {' '.join(text.split())}")
    return "\n".join(lines)


def _value(field: str) -> str | None:
    """`rfc822; bob@dest.test` -> `bob@dest.test` (the address-type is optional in practice)."""
    return field.split(";", 1)[-1].strip() or None


def parse_report(raw: bytes, envelope_to: str | None = None) -> Report | None:
    """The report in a message sent to the intake; None when it is neither a DSN nor an ARF
    report (an out-of-office reply, say)."""
    message = _parse(raw)
    if message.get_content_type() != "multipart/report":
        return None
    report_type = str(message.get_param("report-type") or "").lower()
    # The envelope recipient first (our own VERP address), then the quoted original's headers
    # (Return-Path, or any bounces+ address the receiver kept).
    token = bounce_token(envelope_to or "") or bounce_token(_original_headers(message))
    if report_type == "feedback-report":
        part = _report_part(message, "message/feedback-report")
        groups = _fields(part) if part is not None else []
        fields = groups[0] if groups else Message()
        recipient = _value(str(fields.get("Original-Rcpt-To", ""))) or None
        feedback = str(fields.get("Feedback-Type", "")).strip().lower() or None
        return Report(ReportType.COMPLAINT, token, None, recipient, feedback_type=feedback)
    if report_type != "delivery-status":
        return None
    part = _report_part(message, "message/delivery-status")
    if part is None:
        return None
    for group in _fields(part):
        status = str(group.get("Status", "")).strip()
        action = str(group.get("Action", "")).strip().lower()
        if not status or action in ("delivered", "relayed", "expanded"):
            continue  # the per-message group, or a success notice
        recipient = _value(
            str(group.get("Final-Recipient") or group.get("Original-Recipient") or "")
        )
        diagnostic = " ".join(str(group.get("Diagnostic-Code", "")).split(";", 1)[-1].split())
        verdict = classify_status(status, diagnostic)
        kind = (
            ReportType.DELAY
            if action == "delayed" or verdict.kind == Kind.DEFER
            else ReportType.BOUNCE
        )
        return Report(kind, token, verdict, recipient, action=action or None)
    return None
