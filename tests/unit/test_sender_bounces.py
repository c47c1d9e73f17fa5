"""SMTP reply classification (RFC 3463) and bounce/complaint report parsing (RFC 3464/5965)."""

from __future__ import annotations

import uuid

import pytest

from penguinmails.common.db.blocks import BlockScope
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import TokenPurpose, make_token
from penguinmails.sender.bounces import Kind, ReportType, block_scope, classify, parse_report
from tests.reports import build_arf, build_dsn, original_message


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (250, "2.0.0 OK", Kind.SENT),
        (451, "4.7.1 greylisted", Kind.DEFER),
        (421, "service not available", Kind.DEFER),
        (550, "5.1.1 <x@y.test>: user unknown", Kind.HARD_BOUNCE),
        (550, "5.1.2 bad destination system", Kind.HARD_BOUNCE),
        (550, "5.1.3 bad destination mailbox address syntax", Kind.HARD_BOUNCE),
        (550, "5.1.6 mailbox has moved", Kind.HARD_BOUNCE),
        (550, "5.2.1 mailbox disabled", Kind.HARD_BOUNCE),
        # No enhanced code: nothing proves the mailbox is gone (issue 10: "550 blocked").
        (550, "blocked", Kind.BLOCK),
        (550, "no such user", Kind.BLOCK),
        (551, "user not local", Kind.BLOCK),
        (554, "transaction failed", Kind.BLOCK),
        # Domain authentication (RFC 7372, Gmail, Microsoft): the domain's problem.
        (550, "5.7.26 unauthenticated mail is prohibited", Kind.AUTH),
        (550, "5.7.515 access denied, SPF DKIM DMARC", Kind.AUTH),
        (550, "5.7.23 SPF validation failed", Kind.AUTH),
        # Policy or reputation: the sending server's problem.
        (550, "5.7.1 Recipient address rejected: Access denied", Kind.BLOCK),
        (550, "5.7.1 Service unavailable; client host blocked using Spamhaus", Kind.BLOCK),
        (550, "5.7.25 the IP address sending this message does not have a PTR", Kind.BLOCK),
        (550, "5.7.606 Access denied, banned sending IP", Kind.BLOCK),
        (552, "5.3.4 message too big", Kind.FAIL),
        (554, "5.6.0 message content rejected", Kind.FAIL),
    ],
)
def test_classify(code: int, text: str, kind: Kind) -> None:
    assert classify(code, text).kind == kind


def test_auth_failure_is_never_a_hard_bounce() -> None:
    verdict = classify(550, "5.7.26 DMARC policy")
    assert verdict.kind == Kind.AUTH and verdict.status == "5.7.26"


@pytest.mark.parametrize(
    "text", ["5.1.1 user unknown", "5.1.2 x", "5.1.3 x", "5.1.6 x", "5.1.10 x", "5.2.1 x"]
)
def test_only_recipient_specific_codes_suppress(text: str) -> None:
    assert classify(550, text).kind == Kind.HARD_BOUNCE


@pytest.mark.parametrize("text", ["blocked", "5.7.1 denied", "5.7.26 x", "5.4.1 relay", "5.0.0"])
def test_others_never_suppress(text: str) -> None:
    assert classify(550, text).kind != Kind.HARD_BOUNCE


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


# ------------------------------------------------------------------ reports built as MTAs do


def test_gmail_5_7_26_dsn_is_an_authentication_bounce_that_never_suppresses() -> None:
    token = make_token(KEY, TokenPurpose.BOUNCE, TENANT, 7)
    diagnostic = (
        "550-5.7.26 This mail has been blocked because the sender is unauthenticated.\n"
        " 550-5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM.\n"
        " 550 5.7.26 https://support.google.com/mail/answer/81126 - gsmtp"
    )
    raw = build_dsn("5.7.26", diagnostic)
    report = parse_report(raw, f"bounces+{token}@sender.example")
    assert report is not None and report.type == ReportType.BOUNCE
    assert report.token == token and report.recipient == "bob@gmail.test"
    assert report.action == "failed"
    assert report.verdict is not None
    assert report.verdict.kind == Kind.AUTH and report.verdict.status == "5.7.26"
    assert "Gmail requires all senders" in report.verdict.text


HARD, AUTH = Kind.HARD_BOUNCE, Kind.AUTH


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind"),
    [
        ("5.1.1", "550 5.1.1 The email account that you tried to reach does not exist", HARD),
        ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", HARD),
        ("5.7.1", "550 5.7.1 Message rejected due to local policy", Kind.BLOCK),
        ("5.0.0", "550 blocked", Kind.FAIL),
        ("5.7.515", "550 5.7.515 Access denied, sending domain does not meet the required", AUTH),
    ],
)
def test_dsn_status_decides_the_verdict(status: str, diagnostic: str, kind: Kind) -> None:
    token = make_token(KEY, TokenPurpose.BOUNCE, TENANT, 8)
    report = parse_report(build_dsn(status, diagnostic), f"bounces+{token}@sender.example")
    assert report is not None and report.type == ReportType.BOUNCE
    assert report.verdict is not None and report.verdict.kind == kind


def test_dsn_token_found_in_the_quoted_original_when_sent_elsewhere() -> None:
    token = make_token(KEY, TokenPurpose.BOUNCE, TENANT, 9)
    report = parse_report(
        build_dsn("5.1.1", "550 5.1.1 unknown", original=original_message(token)),
        "postmaster@x.test",
    )
    assert report is not None and report.token == token


def test_success_and_delay_notices_are_not_bounces() -> None:
    token = make_token(KEY, TokenPurpose.BOUNCE, TENANT, 10)
    to = f"bounces+{token}@sender.example"
    assert parse_report(build_dsn("2.0.0", "250 ok", action="delivered"), to) is None
    delayed = parse_report(build_dsn("4.7.0", "421 4.7.0 try again", action="delayed"), to)
    assert delayed is not None and delayed.type == ReportType.DELAY


def test_arf_complaint_at_a_fixed_address_is_matched_by_the_return_path() -> None:
    token = make_token(KEY, TokenPurpose.BOUNCE, TENANT, 11)
    unsubscribe = make_token(KEY, TokenPurpose.UNSUBSCRIBE, TENANT, 11)
    report = parse_report(
        build_arf(original_message(token, unsubscribe=unsubscribe)), "fbl@platform.example"
    )
    assert report is not None and report.type == ReportType.COMPLAINT
    assert report.token == token and report.feedback_type == "abuse"
    assert report.recipient == "<bob@isp.test>" or report.recipient == "bob@isp.test"


def test_arf_with_only_an_unsubscribe_token_names_no_delivery() -> None:
    """A forged complaint quoting the List-Unsubscribe of a message its author received must
    not find a delivery: only bounce tokens are read from reports."""
    unsubscribe = make_token(KEY, TokenPurpose.UNSUBSCRIBE, TENANT, 12)
    report = parse_report(
        build_arf(original_message(None, unsubscribe=unsubscribe)), "fbl@platform.example"
    )
    assert report is not None and report.type == ReportType.COMPLAINT and report.token is None


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        # Gmail names the client IP even when the domain's reputation is the reason.
        (
            "550-5.7.1 [203.0.113.7] Our system has detected that this message is likely "
            "suspicious due to the very low reputation of the sending domain.",
            BlockScope.DOMAIN,
        ),
        (
            "554 5.7.1 Service unavailable; Sender domain listed at dbl.spamhaus.org",
            BlockScope.DOMAIN,
        ),
        (
            "550-5.7.1 [203.0.113.7] Our system has detected that this message is likely "
            "suspicious due to the very low reputation of the sending IP address.",
            BlockScope.SERVER,
        ),
        (
            "550 5.7.1 Unfortunately, messages from [203.0.113.7] weren't sent. Please contact "
            "your Internet service provider since part of their network is on our block list "
            "(S3150).",
            BlockScope.SERVER,
        ),
        (
            "5.7.1 Service unavailable; client host [127.0.0.1] blocked using zen.spamhaus.org",
            BlockScope.SERVER,
        ),
        ("550 blocked", BlockScope.SERVER),
    ],
)
def test_a_block_is_about_the_domain_only_when_the_receiver_says_so(
    text: str, scope: BlockScope
) -> None:
    assert classify(550, text).kind == Kind.BLOCK
    assert block_scope(text) == scope
