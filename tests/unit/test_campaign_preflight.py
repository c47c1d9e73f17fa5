"""The Campaign controller's pure decisions: preflight rules, sending window, stop rules, phase."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from penguinmails.api.v1alpha1 import CampaignSpec
from penguinmails.api.v1alpha1.campaign import SendWindow
from penguinmails.operator.campaign import (
    CampaignSettings,
    build_plan,
    in_window,
    phase_for,
    preflight,
    stop_rule,
)


def spec(**changes: Any) -> CampaignSpec:
    base: dict[str, Any] = {
        "sendingDomainRef": {"name": "acme"},
        "from": {"address": "jane@acme.example", "name": "Jane"},
        "subject": "Hi {{ first_name }}",
        "text": "Hello",
        "audience": {"lists": ["leads"]},
    }
    return CampaignSpec.model_validate(base | changes)


def ready(kind_status: dict[str, str]) -> dict[str, Any]:
    return {
        "conditions": [
            {
                "type": t,
                "status": s,
                "reason": "R",
                "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
            for t, s in kind_status.items()
        ]
    }


TENANT: dict[str, Any] = {
    "metadata": {"name": "acme"},
    "spec": {
        "tier": "starter",
        "contactEmail": "ops@acme.example",
        "postalAddress": {"street": "1 Main St", "city": "Springfield", "country": "US"},
    },
}
DOMAIN: dict[str, Any] = {
    "metadata": {"name": "acme"},
    "spec": {"domain": "acme.example"},
    "status": ready({"Ready": "True", "DNSVerified": "True"}),
}
SERVER: dict[str, Any] = {
    "metadata": {"name": "relay"},
    "spec": {
        "hostname": "relay.acme.example",
        "provider": {"relay": {"host": "127.0.0.1", "port": 2525, "tls": "none"}},
    },
    "status": ready({"Ready": "True"}),
}


def reasons(**kwargs: Any) -> list[str]:
    args: dict[str, Any] = {
        "tenant": TENANT,
        "domain": DOMAIN,
        "servers": [SERVER],
        "server_names": ["relay"],
    } | kwargs
    campaign = args.pop("campaign", spec())
    return [failure.reason for failure in preflight(campaign, **args)]


def test_everything_ready_passes() -> None:
    assert reasons() == []


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"tenant": None}, "TenantNotFound"),
        ({"tenant": TENANT | {"spec": TENANT["spec"] | {"suspended": True}}}, "TenantSuspended"),
        (
            {
                "tenant": TENANT
                | {"spec": {k: v for k, v in TENANT["spec"].items() if k != "postalAddress"}}
            },
            "PostalAddressMissing",
        ),
        ({"sent_this_month": 10**9}, "TierLimitReached"),
        ({"domain": None}, "SendingDomainNotFound"),
        (
            {"domain": DOMAIN | {"status": ready({"Ready": "True", "DNSVerified": "False"})}},
            "DomainNotVerified",
        ),
        (
            {"domain": DOMAIN | {"status": ready({"Ready": "False", "DNSVerified": "True"})}},
            "DomainNotReady",
        ),
        ({"servers": [], "server_names": []}, "NoSmtpServers"),
        ({"servers": []}, "SmtpServerNotFound"),
        ({"servers": [SERVER | {"status": ready({"Ready": "False"})}]}, "SmtpServerNotReady"),
        ({"campaign": spec(**{"from": {"address": "jane@other.example"}})}, "FromDomainMismatch"),
        ({"campaign": spec(subject="Hi {{ first_name ")}, "TemplateInvalid"),
    ],
)
def test_each_rule_names_itself(kwargs: dict[str, Any], reason: str) -> None:
    assert reason in reasons(**kwargs)


def test_failure_messages_say_how_to_fix() -> None:
    failures = preflight(
        spec(),
        tenant=TENANT,
        domain=DOMAIN | {"status": ready({"DNSVerified": "False"})},
        servers=[SERVER],
        server_names=["relay"],
    )
    assert "publish its records" in failures[0].message


def test_window_follows_local_time_across_daylight_saving() -> None:
    window = SendWindow(days=["mon"], start_hour=9, end_hour=10, timezone="America/New_York")
    # 9:30 local on a Monday in winter (UTC-5) and in summer (UTC-4).
    assert in_window(window, datetime(2026, 1, 5, 14, 30, tzinfo=UTC))
    assert in_window(window, datetime(2026, 7, 6, 13, 30, tzinfo=UTC))
    assert not in_window(window, datetime(2026, 7, 6, 14, 30, tzinfo=UTC))  # 10:30 local
    assert not in_window(window, datetime(2026, 1, 6, 14, 30, tzinfo=UTC))  # a Tuesday
    assert in_window(None, datetime(2026, 1, 6, tzinfo=UTC))


def test_stop_rules_need_a_sample_then_fire() -> None:
    campaign = spec(stopRules={"maxBounceRate": 0.05, "minSample": 100})
    assert stop_rule(campaign, {"done": 15, "bounced": 5}) is None
    assert stop_rule(campaign, {"done": 104, "bounced": 4}) is None
    message = stop_rule(campaign, {"done": 110, "bounced": 10})
    assert message is not None and "maxBounceRate" in message and "24h" in message
    complaints = stop_rule(spec(), {"done": 1000, "bounced": 0, "complained": 2})
    assert complaints is not None and "maxComplaintRate" in complaints


def test_phase_order() -> None:
    counts = {"total": 10, "queued": 5, "deferred": 0}
    args: dict[str, Any] = {
        "failures": [],
        "paused": False,
        "pause_reason": None,
        "stopped": None,
        "scheduled": False,
        "counts": counts,
    }
    assert phase_for(**args) == "Sending"
    assert phase_for(**args | {"scheduled": True}) == "Scheduled"
    assert phase_for(**args | {"paused": True}) == "Paused"
    assert phase_for(**args | {"pause_reason": "5.7.26"}) == "Paused"
    assert phase_for(**args | {"counts": {"total": 10, "queued": 0, "deferred": 0}}) == "Completed"


def test_plan_uses_the_relay_and_platform_unsubscribe() -> None:
    plan = build_plan(
        spec(),
        domain=DOMAIN,
        servers=[SERVER],
        postal_address="1 Main St, Springfield, US",
        settings=CampaignSettings("https://unsub.example/u", "penguinmails"),
        started_at=None,
        now=datetime.now(UTC),
    )
    assert plan.relays[0].host == "127.0.0.1" and plan.relays[0].port == 2525
    assert plan.dkim_secret == "acme-dkim" and plan.domain == "acme.example"
    assert plan.unsubscribe_url == "https://unsub.example/u"
    assert plan.unsubscribe_mailto == "unsubscribe@acme.example"
