"""Usage notices without a database: thresholds, the e-mail's words, the settings' errors."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from penguinmails.common.settings import NoticeSettings, OperatorSettings
from penguinmails.operator.notices import Notice, compose, crossed, next_period

SETTINGS = NoticeSettings.from_env(
    {
        "PM_NOTICE_SMTP_HOST": "relay.example.com",
        "PM_NOTICE_SMTP_PASSWORD": "s3cret-relay-pass",
        "PM_NOTICE_BILLING_URL": "https://app.example.com/billing",
    }
)


def test_thresholds_are_reached_in_whole_messages() -> None:
    assert crossed(15, 20) == []
    assert crossed(16, 20) == [80]
    assert crossed(19, 20) == [80, 95]
    assert crossed(20, 20) == [80, 95, 100]
    assert crossed(3, 3) == [80, 95, 100]
    assert crossed(2, 3) == []  # 66%
    assert crossed(0, 1) == []


def test_period_ends_on_the_first_of_the_next_month() -> None:
    assert next_period(date(2026, 12, 1)) == date(2027, 1, 1)
    assert next_period(date(2026, 2, 1)) == date(2026, 3, 1)


def notice(threshold: int, *, overage: bool) -> Notice:
    return Notice("acme", "starter", date(2026, 12, 1), threshold, 20, 20, overage, "<m@x>")


def test_the_100_notice_says_how_to_upgrade_or_that_overage_is_billed() -> None:
    stopped = compose(notice(100, overage=False), "ops@acme.example", SETTINGS)
    text = stopped.get_content()
    assert "sending stopped" in str(stopped["Subject"])
    assert "New sends are stopped until January 1 (UTC)" in text
    assert "upgrade the plan: open https://app.example.com/billing" in text
    billed = compose(notice(100, overage=True), "ops@acme.example", SETTINGS)
    assert "overage is billed" in str(billed["Subject"])
    assert "billed as overage on your next invoice" in billed.get_content()
    early = compose(notice(80, overage=False), "ops@acme.example", SETTINGS).get_content()
    assert "At 20 messages new sends stop until January 1 (UTC)" in early
    assert str(stopped["Auto-Submitted"]) == "auto-generated"
    assert str(stopped["Message-ID"]) == "<m@x>"


def test_the_relay_password_is_never_shown() -> None:
    assert "s3cret" not in repr(SETTINGS)
    assert SETTINGS.enabled and SETTINGS.smtp_tls == "starttls" and SETTINGS.smtp_port == 587
    assert not NoticeSettings.from_env({}).enabled


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PM_NOTICE_SMTP_TLS", "ssl", "PM_NOTICE_SMTP_TLS='ssl' is not a TLS mode"),
        ("PM_NOTICE_SMTP_PORT", "70000", "PM_NOTICE_SMTP_PORT='70000' is not a port"),
        ("PM_NOTICE_FROM", "billing", "PM_NOTICE_FROM='billing' has no address"),
        ("PM_NOTICE_SMTP_TIMEOUT_SECONDS", "soon", "is not a number"),
        ("PM_NOTICE_SMTP_CA", "/etc/ssl/ca.pem", "PM_NOTICE_SMTP_CA holds no PEM certificate"),
    ],
)
def test_bad_notice_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoticeSettings.from_env({name: value})


def test_event_retention_shorter_than_stripes_retries_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PM_DATABASE_URL", "postgresql://x@127.0.0.1/x")
    monkeypatch.setenv("PM_BILLING_EVENT_RETENTION_DAYS", "2")
    with pytest.raises(ValueError, match="PM_BILLING_EVENT_RETENTION_DAYS=2 is shorter"):
        OperatorSettings.from_env()
    monkeypatch.delenv("PM_BILLING_EVENT_RETENTION_DAYS")
    assert OperatorSettings.from_env().billing_event_retention == timedelta(days=30)
