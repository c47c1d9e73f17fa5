"""What an SMTP reply or a bounce report means for a delivery.

* `classify(code, text)`: a reply from the relay, by its RFC 3463 enhanced status code when it
  has one, else by the basic reply code;
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
from email.message import Message
from enum import StrEnum

__all__ = ["Kind", "Report", "Verdict", "classify", "parse_report", "token_from_address"]


class Kind(StrEnum):
    SENT = "sent"
    DEFER = "defer"
    """Transient (4xx): retry with backoff."""
    HARD_BOUNCE = "hard_bounce"
    """The address does not exist or cannot receive: bounce and suppress."""
    FAIL = "fail"
    """Permanent for this message, not for the address (policy, content, size): no retry."""
    AUTH = "auth"
    """5.7.x authentication or policy on the sender's side (DKIM/SPF/DMARC, reputation): our
    problem, not the recipient's: pause the campaign and alert; never suppress the address."""


# RFC 3463 subjects/details that mean "this mailbox will never take mail".
_HARD = {"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"}
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
        # No enhanced code: 550/551/553 are mailbox problems by RFC 5321, the rest unclear.
        kind = Kind.HARD_BOUNCE if code in (550, 551, 553) else Kind.FAIL
        return Verdict(kind, code, None, text)
    if status in _HARD:
        return Verdict(Kind.HARD_BOUNCE, code, status, text)
    if status.startswith("5.7."):
        return Verdict(Kind.AUTH, code, status, text)
    return Verdict(Kind.FAIL, code, status, text)


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
    """Delivery token from the return-path the report was addressed to, or from the original
    message's headers quoted in the report."""
    verdict: Verdict | None
    recipient: str | None


_TOKEN = re.compile(r"(?:bounces|unsubscribe)\+([a-z2-7]{56})@", re.IGNORECASE)


def token_from_address(address: str) -> str | None:
    match = _TOKEN.search(address)
    return match.group(1).lower() if match else None


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _report_part(message: Message, content_type: str) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _status_fields(part: Message) -> list[Message]:
    """The per-message and per-recipient field groups of a message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [
        email.message_from_string(block + "\n")
        for block in re.split(r"\r?\n\r?\n", text)
        if block.strip()
    ]


def parse_report(raw: bytes, envelope_to: str | None = None) -> Report | None:
    """The report in a message sent to a return-path address; None when it is neither a DSN
    nor an ARF report (an out-of-office reply, say)."""
    message = _parse(raw)
    token = token_from_address(envelope_to or "") or token_from_address(str(message.get("To", "")))
    report_type = (
        str(message.get_param("report-type") or "").lower()
        if message.get_content_type() == "multipart/report"
        else ""
    )
    if report_type == "feedback-report":
        original = _report_part(message, "message/rfc822") or _report_part(
            message, "text/rfc822-headers"
        )
        if token is None and original is not None:
            token = _token_in_original(original)
        return Report(ReportType.COMPLAINT, token, None, None)
    if report_type != "delivery-status":
        return None
    part = _report_part(message, "message/delivery-status")
    if part is None:
        return None
    for group in _status_fields(part):
        status = str(group.get("Status", "")).strip()
        if not status:
            continue
        field = str(group.get("Final-Recipient") or group.get("Original-Recipient") or "")
        recipient = field.split(";", 1)[-1].strip() or None
        diagnostic = str(group.get("Diagnostic-Code", "")).split(";", 1)[-1].strip()
        verdict = classify_status(status, diagnostic)
        if token is None:
            original = _report_part(message, "message/rfc822") or _report_part(
                message, "text/rfc822-headers"
            )
            token = _token_in_original(original) if original is not None else None
        action = str(group.get("Action", "")).strip().lower()
        kind = (
            ReportType.DELAY
            if action == "delayed" or status.startswith("4.")
            else ReportType.BOUNCE
        )
        return Report(kind, token, verdict, recipient)
    return None


def _token_in_original(part: Message) -> str | None:
    text = part.as_string() if part.is_multipart() else str(part.get_payload(decode=False))
    for pattern in (r"Return-Path:\s*<?([^>\s]+)", r"List-Unsubscribe:[^\n]*mailto:([^?>\s]+)"):
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            found = token_from_address(match.group(1))
            if found:
                return found
    return None
