"""The platform's own e-mail through its relay (PM_NOTICE_SMTP_*): the usage notices
(operator/notices.py) and the invitations (common/db/invitation_emails.py) go out here.

One message, one SMTP exchange; the outcome says whether the relay took it, refused it for
good (5xx: do not try again), or could not be reached or answered 4xx (try again later). The
relay's certificate is always verified: against PM_NOTICE_SMTP_CA when given, else the system's
trust store. The AUTH password is never logged.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr

import aiosmtplib

from penguinmails.common.settings import NoticeSettings

__all__ = ["Delivery", "deliver", "message_domain"]


@dataclass(frozen=True)
class Delivery:
    """What became of one message."""

    sent: bool
    """The relay accepted it."""
    refusal: str | None = None
    """The relay's permanent refusal (5xx), to record: sending again would not help."""
    problem: str | None = None
    """Why it was not sent this time (relay unreachable, 4xx): to try again later."""


def message_domain(settings: NoticeSettings) -> str:
    """The domain of the From address, which names our Message-IDs."""
    return parseaddr(settings.from_address)[1].rpartition("@")[2] or "penguinmails.io"


def _tls_context(settings: NoticeSettings) -> ssl.SSLContext | None:
    """Verification against PM_NOTICE_SMTP_CA when given, else aiosmtplib's default (the
    system's trust store); never unverified."""
    if settings.smtp_tls == "none" or not settings.ca_pem:
        return None
    return ssl.create_default_context(cadata=settings.ca_pem)


def _permanent(error: aiosmtplib.SMTPException) -> str | None:
    """The relay's answer when it refused for good (5xx), else None (try again later)."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [e.code for e in error.recipients]
        if codes and all(code >= 500 for code in codes):
            return "; ".join(f"{e.code} {e.message}" for e in error.recipients)[:500]
        return None
    if isinstance(error, aiosmtplib.SMTPResponseException) and error.code >= 500:
        return f"{error.code} {error.message}"[:500]
    return None


async def deliver(message: EmailMessage, settings: NoticeSettings) -> Delivery:
    """Hand `message` to the relay (its From is the caller's to set)."""
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password or None,
            use_tls=settings.smtp_tls == "tls",
            start_tls=settings.smtp_tls == "starttls",
            tls_context=_tls_context(settings),
            timeout=settings.timeout_seconds,
        )
    except aiosmtplib.SMTPException as error:
        refusal = _permanent(error)
        if refusal is not None:
            return Delivery(sent=False, refusal=refusal)
        return Delivery(sent=False, problem=type(error).__name__)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return Delivery(sent=False, problem=f"relay unreachable ({reason})")
    return Delivery(sent=True)
