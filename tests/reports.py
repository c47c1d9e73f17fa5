"""DSN (RFC 3464) and ARF (RFC 5965) reports built with the email package, as MTAs and
feedback loops write them, for the parsing unit tests and the intake integration test."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText


def original_message(token: str | None, *, unsubscribe: str | None = None) -> bytes:
    """One of our messages as a receiver stored it (the Return-Path its MTA added). The email
    package folds the long Return-Path as encoded-words, as some reporters do."""
    original = EmailMessage()
    if token is not None:
        original["Return-Path"] = f"<bounces+{token}@sender.example>"
    original["From"] = "Jane <jane@sender.example>"
    original["To"] = "bob@gmail.test"
    original["Subject"] = "Quick question"
    original["Message-ID"] = "<c0ffee.42@sender.example>"
    if unsubscribe is not None:
        original["List-Unsubscribe"] = (
            f"<https://u.example/u/{unsubscribe}>, "
            f"<mailto:unsubscribe+{unsubscribe}@sender.example>"
        )
    original.set_content("Hello Bob")
    return original.as_bytes()


def build_dsn(
    status: str,
    diagnostic: str,
    *,
    action: str = "failed",
    recipient: str = "bob@gmail.test",
    original: bytes | None = None,
    to: str = "postmaster@sender.example",
) -> bytes:
    """A DSN as Postfix writes one for a receiver's rejection after the relay accepted the
    message: human part, message/delivery-status, the original's headers."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@relay.test (Mail Delivery System)"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.attach(MIMEText("I'm sorry to have to inform you that your message could not be"))
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; relay.test"
    per_message["X-Postfix-Queue-ID"] = "4ABC"
    per_message["Arrival-Date"] = "Tue,  1 Dec 2026 18:00:00 +0000 (UTC)"
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Original-Recipient"] = f"rfc822;{recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Remote-MTA"] = "dns; gmail-smtp-in.l.google.test"
    per_recipient["Diagnostic-Code"] = f"smtp; {diagnostic}"
    status_part = Message()
    status_part.set_type("message/delivery-status")
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    headers = Message()
    headers.set_type("text/rfc822-headers")
    text = (original or original_message(None)).decode("utf-8", "replace")
    headers.set_payload(text.replace("\r\n", "\n").split("\n\n", 1)[0] + "\n")
    report.attach(headers)
    return report.as_bytes()


def build_arf(
    original: bytes, *, feedback: str = "abuse", to: str = "fbl@platform.example"
) -> bytes:
    """An RFC 5965 feedback report as Yahoo's or Microsoft's loop sends it to a registered
    address: the whole original message attached."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "staff@fbl.isp.test"
    report["To"] = to
    report["Subject"] = "FW: Quick question"
    report.attach(MIMEText("This is an email abuse report for an email message received"))
    fields = Message()
    fields.set_type("message/feedback-report")
    fields.set_payload(
        f"Feedback-Type: {feedback}\nUser-Agent: ISP-FBL/1.0\nVersion: 1\n"
        "Original-Mail-From: <bounces+x@sender.example>\n"
        "Original-Rcpt-To: <bob@isp.test>\nArrival-Date: Tue, 1 Dec 2026 18:00:00 +0000\n"
    )
    report.attach(fields)
    parsed = email.message_from_bytes(original, policy=email.policy.compat32)
    report.attach(MIMEMessage(parsed))
    return report.as_bytes()
