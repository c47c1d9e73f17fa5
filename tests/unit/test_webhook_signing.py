"""Webhook signatures checked by the Standard Webhooks reference library, the retry schedule as
data, and the endpoint input checks."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from penguinmails.common.webhook_dispatch import (
    DEFAULT_RETRY_SCHEDULE,
    RetrySchedule,
    _pinned,
)
from penguinmails.common.webhooks import (
    SECRET_PREFIX,
    WebhookError,
    _check_event_types,
    _check_url,
    new_secret,
    sign,
    signed_headers,
)


def test_signature_verifies_with_the_reference_library_and_fails_when_anything_changes() -> None:
    secret = new_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX))) == 32
    body = '{"data": {"email": "jané@example.com"}, "type": "delivery.bounced"}'.encode()
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers(secret, "msg_" + "a" * 32, now, body)
    assert Webhook(secret).verify(body, headers)["type"] == "delivery.bounced"
    # The library's own signer agrees byte for byte.
    expected = Webhook(secret).sign(
        "msg_" + "a" * 32, datetime.fromtimestamp(now, UTC), body.decode()
    )
    assert headers["webhook-signature"] == expected
    for changed in (
        {**headers, "webhook-id": "msg_" + "b" * 32},
        {**headers, "webhook-timestamp": str(now - 1)},
        {**headers, "webhook-signature": sign(new_secret(), "msg_" + "a" * 32, now, body)},
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, changed)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    stale = signed_headers(secret, "msg_" + "a" * 32, now - 3600, body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, stale)


def test_after_a_rotation_both_secrets_verify() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"type": "campaign.state_changed"}'
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers(new, "msg_" + "c" * 32, now, body, previous=old)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_default_schedule_is_exponential_and_finite() -> None:
    delays = [d.total_seconds() for d in DEFAULT_RETRY_SCHEDULE.delays]
    assert delays == [5, 25, 125, 625, 3125, 15625, 36000, 36000]
    assert DEFAULT_RETRY_SCHEDULE.after(1) == timedelta(seconds=5)
    assert DEFAULT_RETRY_SCHEDULE.after(8) == timedelta(hours=10)
    assert DEFAULT_RETRY_SCHEDULE.after(9) is None  # nine attempts, then failed
    assert sum(delays) / 3600 == pytest.approx(25.4, abs=0.1)  # about a day
    assert RetrySchedule(()).after(1) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http or https"),
        ("https:///path", "no host"),
        ("https://user:pw@example.com/x", "credentials"),
        ("https://example.com/x#frag", "fragment"),
        ("https://example.com:99999/x", "not a URL"),
        ("https://example.com/" + "a" * 2050, "2048"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, why: str) -> None:
    with pytest.raises(WebhookError) as caught:
        _check_url(url)
    assert caught.value.field == "url" and why in caught.value.message
    assert "pw" not in str(caught.value)


def test_event_types_must_be_known() -> None:
    assert _check_event_types(["delivery.bounced", "delivery.bounced"]) == ["delivery.bounced"]
    for bad in ([], ["delivery.opened"]):
        with pytest.raises(WebhookError) as caught:
            _check_event_types(bad)
        assert caught.value.field == "event_types" and "campaign.state_changed" in str(caught.value)


def test_requests_go_to_the_checked_address_under_the_endpoint_name() -> None:
    url, headers, extensions = _pinned("https://hooks.example.com/in?x=1", "203.0.113.5")
    assert url == "https://203.0.113.5/in?x=1"
    assert headers == {"host": "hooks.example.com"}
    assert extensions == {"sni_hostname": "hooks.example.com"}  # and so the certificate check
    url, headers, extensions = _pinned("http://hooks.example.com:8080/in", "2001:db8::5")
    assert url == "http://[2001:db8::5]:8080/in"
    assert headers == {"host": "hooks.example.com:8080"} and extensions == {}
