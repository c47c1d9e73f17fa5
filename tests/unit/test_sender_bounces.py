"""SMTP reply classification (RFC 3463) and bounce/complaint report parsing (RFC 3464/5965)."""

from __future__ import annotations

import uuid

import pytest

from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import TokenPurpose, make_token
from penguinmails.sender.bounces import Kind, ReportType, classify, parse_report


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (250, "2.0.0 OK", Kind.SENT),
        (451, "4.7.1 greylisted", Kind.DEFER),
        (421, "service not available", Kind.DEFER),
        (550, "5.1.1 <x@y.test>: user unknown", Kind.HARD_BOUNCE),
        (550, "5.2.1 mailbox disabled", Kind.HARD_BOUNCE),
        (550, "no such user", Kind.HARD_BOUNCE),
        (550, "5.7.26 unauthenticated mail is prohibited", Kind.AUTH),
        (550, "5.7.515 access denied, SPF DKIM DMARC", Kind.AUTH),
        (552, "5.3.4 message too big", Kind.FAIL),
        (554, "transaction failed", Kind.FAIL),
    ],
)
def test_classify(code: int, text: str, kind: Kind) -> None:
    assert classify(code, text).kind == kind


def test_auth_failure_is_never_a_hard_bounce() -> None:
    verdict = classify(550, "5.7.26 DMARC policy")
    assert verdict.kind == Kind.AUTH and verdict.status == "5.7.26"


KEY = MasterKeys.parse("k" * 32).token_key(uuid.UUID("00000000-0000-0000-0000-000000000001"))
TENANT = uuid.UUID("00000000-0000-0000-0000-000000000001")


def dsn(status: str, action: str, token: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@relay.test\r\n"
        f"To: bounces+{token}@sender.example\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        f"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; relay.test\r\n\r\n"
        f"Final-Recipient: rfc822; bob@dest.test\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} no such user\r\n"
        f"--B--\r\n"
    ).encode()


def test_dsn_hard_bounce_is_matched_by_its_verp_token() -> None:
    token = make_token(KEY, TokenPurpose.BOUNCE, TENANT, 42)
    report = parse_report(dsn("5.1.1", "failed", token), f"bounces+{token}@sender.example")
    assert report is not None
    assert report.type == ReportType.BOUNCE and report.token == token
    assert report.verdict is not None and report.verdict.kind == Kind.HARD_BOUNCE
    assert report.recipient == "bob@dest.test"


def test_delayed_dsn_is_not_a_bounce() -> None:
    token = make_token(KEY, TokenPurpose.BOUNCE, TENANT, 42)
    report = parse_report(dsn("4.4.1", "delayed", token))
    assert report is not None and report.type == ReportType.DELAY


def test_arf_complaint_finds_the_token_in_the_original_message() -> None:
    token = make_token(KEY, TokenPurpose.BOUNCE, TENANT, 9)
    raw = (
        "From: fbl@isp.test\r\nTo: abuse@sender.example\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: isp/1.0\r\nVersion: 1\r\n"
        "--F\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <bounces+{token}@sender.example>\r\nFrom: jane@sender.example\r\n"
        "--F--\r\n"
    ).encode()
    report = parse_report(raw, "abuse@sender.example")
    assert report is not None and report.type == ReportType.COMPLAINT and report.token == token


def test_an_ordinary_reply_is_not_a_report() -> None:
    raw = (
        b"From: bob@dest.test\r\nTo: bounces+x@sender.example\r\nSubject: Re: hi\r\n\r\nThanks\r\n"
    )
    assert parse_report(raw) is None
