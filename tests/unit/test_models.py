"""The v1alpha1 models: valid objects parse, invalid ones fail naming the field, helpers and the
tier table behave."""

from __future__ import annotations

import copy
import itertools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from penguinmails.api.v1alpha1 import (
    RESOURCES,
    TIERS,
    Campaign,
    CampaignSpec,
    Condition,
    ConditionStatus,
    DkimAlgorithm,
    DmarcPolicy,
    DnsProviderType,
    ProviderType,
    SendingDomain,
    SendingDomainSpec,
    SmtpServer,
    SmtpServerSpec,
    SmtpServerStatus,
    Tenant,
    TenantSpec,
    TenantStatus,
    Tier,
    WarmupSettings,
    get_condition,
    limits_for,
    parse_duration,
    parse_quantity,
    set_condition,
    tenant_namespace,
)
from penguinmails.api.v1alpha1.common import DNS_SUBDOMAIN_PATTERN, KubeModel
from penguinmails.api.v1alpha1.tiers import DEDICATED_POOL_LABEL, DEDICATED_POOL_VALUE

# --------------------------------------------------------------------------------------------
# Example objects (also used by test_crds.py)
# --------------------------------------------------------------------------------------------

TENANT: dict[str, Any] = {
    "apiVersion": "penguinmails.io/v1alpha1",
    "kind": "Tenant",
    "metadata": {"name": "acme", "generation": 3},
    "spec": {
        "tier": "professional",
        "displayName": "Acme Corp",
        "contactEmail": "ops@acme.example",
        "postalAddress": {
            "street": "1 Main St",
            "city": "Springfield",
            "region": "IL",
            "postalCode": "62701",
            "country": "US",
        },
        "billing": {"stripeCustomerId": "cus_123", "stripeSubscriptionId": "sub_456"},
    },
    "status": {
        "observedGeneration": 3,
        "namespace": "tenant-acme",
        "tier": "professional",
        "senderReplicas": 0,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "",
                "lastTransitionTime": "2025-01-02T03:04:05Z",
                "observedGeneration": 3,
            }
        ],
    },
}

SMTP_RELAY: dict[str, Any] = {
    "apiVersion": "penguinmails.io/v1alpha1",
    "kind": "SmtpServer",
    "metadata": {"name": "relay", "namespace": "tenant-acme"},
    "spec": {
        "hostname": "mx1.acme.example",
        "provider": {
            "relay": {
                "host": "127.0.0.1",
                "port": 2525,
                "tls": "none",
                "credentialsSecretRef": {"name": "relay-auth"},
            }
        },
    },
}

SMTP_HOSTWINDS: dict[str, Any] = {
    "apiVersion": "penguinmails.io/v1alpha1",
    "kind": "SmtpServer",
    "metadata": {"name": "vps1", "namespace": "tenant-acme"},
    "spec": {
        "hostname": "mx2.acme.example",
        "pool": "dedicated",
        "maxPerHour": 500,
        "warmup": {"initialPerDay": 20, "dailyIncreasePercent": 30, "targetPerDay": 5000},
        "provider": {
            "hostwinds": {
                "locationId": 1,
                "planId": 123,
                "template": "debian-12",
                "apiKeySecretRef": {"name": "hostwinds", "key": "api-key"},
                "sshKeySecretRef": {"name": "hostwinds-ssh", "key": "ssh-privatekey"},
            }
        },
    },
    "status": {
        "phase": "Ready",
        "provider": "hostwinds",
        "providerId": "987654",
        "ipAddress": "203.0.113.7",
        "lastProbe": {"time": "2025-01-02T03:04:05Z", "tls": True, "listedOn": []},
    },
}

DOMAIN: dict[str, Any] = {
    "apiVersion": "penguinmails.io/v1alpha1",
    "kind": "SendingDomain",
    "metadata": {"name": "acme-mail", "namespace": "tenant-acme"},
    "spec": {
        "domain": "mail.acme.example",
        "zone": "acme.example",
        "dnsProvider": {
            "type": "rfc2136",
            "rfc2136": {"server": "127.0.0.1", "port": 5353, "tsigKeyName": "penguinmails"},
            "credentialsSecretRef": {"name": "tsig", "key": "secret"},
        },
        "smtpServerRefs": [{"name": "relay"}],
        "spf": {"includes": ["_spf.relay.example"], "policy": "-all"},
        "dmarc": {
            "rua": ["dmarc@acme.example"],
            "rollout": [
                {"policy": "quarantine", "after": "336h"},
                {"policy": "reject", "after": "720h"},
            ],
        },
    },
}

CAMPAIGN: dict[str, Any] = {
    "apiVersion": "penguinmails.io/v1alpha1",
    "kind": "Campaign",
    "metadata": {"name": "spring", "namespace": "tenant-acme"},
    "spec": {
        "sendingDomainRef": {"name": "acme-mail"},
        "from": {"address": "jane@mail.acme.example", "name": "Jane from Acme"},
        "replyTo": {"address": "jane@acme.example"},
        "subject": "Quick question, {{ first_name }}",
        "text": "Hi {{ first_name }}",
        "html": "<p>Hi {{ first_name }}</p>",
        "audience": {"lists": ["spring-leads"], "excludeLists": ["customers"]},
        "schedule": {
            "startAt": "2025-06-01T08:00:00Z",
            "window": {"days": ["mon", "tue"], "startHour": 9, "endHour": 17},
        },
        "throttle": {"perHour": 100, "perDay": 1000},
        "stopRules": {"maxBounceRate": 0.03},
        "unsubscribe": {"url": "https://u.acme.example/unsub", "mailto": "unsub@acme.example"},
    },
    "status": {
        "phase": "Sending",
        "progress": 42,
        "counts": {"total": 100, "queued": 58, "sent": 42},
        "startedAt": "2025-06-01T08:00:05Z",
    },
}

EXAMPLES: dict[type[BaseModel], list[dict[str, Any]]] = {
    Tenant: [TENANT],
    SmtpServer: [SMTP_RELAY, SMTP_HOSTWINDS],
    SendingDomain: [DOMAIN],
    Campaign: [CAMPAIGN],
}


def spec_with(example: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``example["spec"]`` with top-level keys replaced (None removes)."""
    spec: dict[str, Any] = copy.deepcopy(example["spec"])
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def error_locs(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in err["loc"]) for err in exc.errors()]


# --------------------------------------------------------------------------------------------
# Valid objects
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "example"),
    [(model, ex) for model, exs in EXAMPLES.items() for ex in exs],
    ids=lambda v: getattr(v, "__name__", None) or v["metadata"]["name"],
)
def test_examples_parse_and_round_trip(model: type[KubeModel], example: dict[str, Any]) -> None:
    obj = model.model_validate(example)
    dumped = obj.to_k8s()
    assert dumped["apiVersion"] == "penguinmails.io/v1alpha1"
    assert dumped["kind"] == example["kind"]
    assert dumped["metadata"] == example["metadata"]
    assert model.model_validate(dumped) == obj
    # Everything the example set comes back unchanged (defaults may add more).
    _assert_subset(example["spec"], dumped["spec"])


def _assert_subset(expected: Any, actual: Any, path: str = "spec") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing after round trip"
            _assert_subset(value, actual[key], f"{path}.{key}")
    else:
        assert actual == expected, path


def test_parsed_values_are_typed() -> None:
    tenant = Tenant.model_validate(TENANT)
    assert tenant.spec.tier is Tier.PROFESSIONAL
    assert tenant.name == "acme"
    assert tenant.generation == 3
    assert tenant.namespace_name == "tenant-acme"
    assert tenant.status is not None and tenant.status.is_ready()

    smtp = SmtpServer.model_validate(SMTP_HOSTWINDS)
    assert smtp.spec.provider.type is ProviderType.HOSTWINDS
    assert smtp.spec.provider.hostwinds is not None
    assert smtp.spec.provider.hostwinds.reclaim_policy == "Delete"
    assert smtp.namespace == "tenant-acme"

    relay = SmtpServerSpec.model_validate(SMTP_RELAY["spec"])
    assert relay.provider.type is ProviderType.RELAY
    assert relay.warmup == WarmupSettings()  # default_factory

    domain = SendingDomainSpec.model_validate(DOMAIN["spec"])
    assert domain.dns_provider.type is DnsProviderType.RFC2136
    assert domain.dkim.algorithms == [DkimAlgorithm.RSA2048, DkimAlgorithm.ED25519]
    assert domain.dkim.rotate_after == "2160h"
    assert parse_duration(domain.dkim.rotate_after) == timedelta(days=90)
    assert domain.dmarc.policy is DmarcPolicy.NONE
    assert domain.verify_interval == "10m"

    campaign = CampaignSpec.model_validate(CAMPAIGN["spec"])
    assert campaign.from_.address == "jane@mail.acme.example"
    assert campaign.schedule.start_at == datetime(2025, 6, 1, 8, tzinfo=UTC)
    assert campaign.stop_rules.max_complaint_rate == 0.001
    assert campaign.paused is False


def test_camel_case_on_the_wire_snake_case_in_python() -> None:
    spec = TenantSpec(tier=Tier.STARTER, contact_email="a@acme.example", display_name="A")
    dumped = spec.to_k8s()
    assert dumped == {
        "tier": "starter",
        "contactEmail": "a@acme.example",
        "displayName": "A",
        "suspended": False,
    }
    # Plain model_dump also uses the aliases (serialize_by_alias).
    assert "contactEmail" in spec.model_dump()
    assert TenantSpec.model_validate(dumped) == spec


def test_from_is_aliased() -> None:
    spec = CampaignSpec.model_validate(CAMPAIGN["spec"])
    dumped = spec.to_k8s()
    assert dumped["from"] == {"address": "jane@mail.acme.example", "name": "Jane from Acme"}
    assert "from_" not in dumped


def test_status_dump_omits_unset_fields() -> None:
    status = SmtpServerStatus(observed_generation=2, ip_address="203.0.113.9")
    assert status.to_k8s() == {
        "observedGeneration": 2,
        "conditions": [],
        "ipAddress": "203.0.113.9",
    }


def test_unknown_spec_fields_are_errors_unknown_status_fields_are_ignored() -> None:
    with pytest.raises(ValidationError) as exc:
        TenantSpec.model_validate({**TENANT["spec"], "contactEmial": "x@acme.example"})
    assert "contactEmial" in error_locs(exc.value)
    status = TenantStatus.model_validate({**TENANT["status"], "futureField": 1})
    assert status.namespace == "tenant-acme"


# --------------------------------------------------------------------------------------------
# Invalid objects: the error names the field
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "spec", "loc"),
    [
        pytest.param(TenantSpec, spec_with(TENANT, tier="gold"), "tier", id="unknown-tier"),
        pytest.param(TenantSpec, spec_with(TENANT, tier=None), "tier", id="missing-tier"),
        pytest.param(
            TenantSpec,
            spec_with(TENANT, contactEmail="ops@acme"),
            "contactEmail",
            id="email-without-tld",
        ),
        pytest.param(
            TenantSpec,
            spec_with(TENANT, contactEmail="ops.acme.example"),
            "contactEmail",
            id="email-without-at",
        ),
        pytest.param(
            TenantSpec,
            spec_with(TENANT, contactEmail="o ps@acme.example"),
            "contactEmail",
            id="email-with-space",
        ),
        pytest.param(
            TenantSpec,
            spec_with(TENANT, billing={"stripeSubscriptionId": "sub_1"}),
            "billing",
            id="subscription-without-customer",
        ),
        pytest.param(
            TenantSpec,
            spec_with(TENANT, postalAddress={"street": "x", "city": "y", "country": "usa"}),
            "postalAddress.country",
            id="country-not-alpha2",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, domain="Mail.Acme.example", zone=None),
            "domain",
            id="domain-upper-case",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, domain="mail.acme.example.", zone=None),
            "domain",
            id="domain-trailing-dot",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, domain="localhost", zone=None),
            "domain",
            id="domain-single-label",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, domain="192.0.2.1", zone=None),
            "domain",
            id="domain-ip",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, domain="-bad.acme.example", zone=None),
            "domain",
            id="domain-leading-hyphen",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, zone="cme.example"),
            "",
            id="domain-not-in-zone",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, dkim={"rotateAfter": "90d"}),
            "dkim.rotateAfter",
            id="duration-with-days",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, dkim={"algorithms": ["rsa1024"]}),
            "dkim.algorithms.0",
            id="dkim-unknown-algorithm",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, dnsProvider={"type": "route53"}),
            "dnsProvider.type",
            id="dns-unknown-provider",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(
                DOMAIN,
                dnsProvider={"type": "powerdns", "credentialsSecretRef": {"name": "a", "key": "b"}},
            ),
            "dnsProvider",
            id="powerdns-without-settings",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(
                DOMAIN,
                dnsProvider={"type": "rfc2136", "rfc2136": {"server": "ns1", "tsigKeyName": "k"}},
            ),
            "dnsProvider",
            id="rfc2136-without-credentials",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(
                DOMAIN,
                dmarc={"policy": "reject", "rollout": [{"policy": "quarantine", "after": "1h"}]},
            ),
            "dmarc",
            id="dmarc-rollout-looser",
        ),
        pytest.param(
            SendingDomainSpec,
            spec_with(DOMAIN, spf={"policy": "+all"}),
            "spf.policy",
            id="spf-pass-all",
        ),
        pytest.param(SmtpServerSpec, spec_with(SMTP_RELAY, provider={}), "provider", id="no-prov"),
        pytest.param(
            SmtpServerSpec,
            spec_with(
                SMTP_RELAY,
                provider={**SMTP_RELAY["spec"]["provider"], "mailuInCluster": {}},
            ),
            "provider",
            id="two-providers",
        ),
        pytest.param(
            SmtpServerSpec,
            spec_with(SMTP_RELAY, hostname="mx1"),
            "hostname",
            id="hostname-not-fqdn",
        ),
        pytest.param(
            SmtpServerSpec,
            spec_with(SMTP_RELAY, provider={"relay": {"host": "127.0.0.1", "tls": "ssl"}}),
            "provider.relay.tls",
            id="relay-bad-tls-mode",
        ),
        pytest.param(
            SmtpServerSpec,
            spec_with(SMTP_RELAY, provider={"relay": {"host": "127.0.0.1", "port": 70000}}),
            "provider.relay.port",
            id="relay-port-range",
        ),
        pytest.param(
            SmtpServerSpec,
            spec_with(SMTP_RELAY, warmup={"initialPerDay": 100, "targetPerDay": 10}),
            "warmup",
            id="warmup-target-below-start",
        ),
        pytest.param(
            CampaignSpec, spec_with(CAMPAIGN, text=None, html=None), "", id="campaign-no-body"
        ),
        pytest.param(
            CampaignSpec,
            spec_with(CAMPAIGN, subject="Hi\r\nBcc: all@example.com"),
            "subject",
            id="subject-header-injection",
        ),
        pytest.param(
            CampaignSpec,
            spec_with(CAMPAIGN, **{"from": {"address": "jane"}}),
            "from.address",
            id="from-not-an-address",
        ),
        pytest.param(
            CampaignSpec,
            spec_with(CAMPAIGN, throttle={"perHour": 500, "perDay": 100}),
            "throttle",
            id="throttle-hour-above-day",
        ),
        pytest.param(
            CampaignSpec,
            spec_with(CAMPAIGN, schedule={"window": {"startHour": 18, "endHour": 9}}),
            "schedule.window",
            id="window-reversed",
        ),
        pytest.param(
            CampaignSpec,
            spec_with(CAMPAIGN, audience={"lists": ["a"], "excludeLists": ["a"]}),
            "audience",
            id="audience-overlap",
        ),
        pytest.param(
            CampaignSpec,
            spec_with(CAMPAIGN, audience={"lists": []}),
            "audience.lists",
            id="audience-empty",
        ),
        pytest.param(
            CampaignSpec,
            spec_with(CAMPAIGN, unsubscribe={"url": "http://u.acme.example/x"}),
            "unsubscribe.url",
            id="unsubscribe-not-https",
        ),
        pytest.param(
            CampaignSpec,
            spec_with(CAMPAIGN, stopRules={"maxBounceRate": 5}),
            "stopRules.maxBounceRate",
            id="bounce-rate-above-one",
        ),
    ],
)
def test_invalid_specs_name_the_field(
    model: type[KubeModel], spec: dict[str, Any], loc: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(spec)
    locs = error_locs(exc.value)
    if loc:
        assert any(found == loc or found.startswith(loc + ".") for found in locs), locs
    else:  # a cross-field rule: reported on the object itself
        assert "" in locs, locs


def test_cross_field_error_messages_match_the_crd_messages() -> None:
    with pytest.raises(ValidationError, match=r"set exactly one of provider\.hostwinds"):
        SmtpServerSpec.model_validate(spec_with(SMTP_RELAY, provider={}))
    with pytest.raises(ValidationError, match=r"domain must be zone itself or a name under it"):
        SendingDomainSpec.model_validate(spec_with(DOMAIN, zone="other.example"))
    with pytest.raises(ValidationError, match=r"set spec.text, spec.html or both"):
        CampaignSpec.model_validate(spec_with(CAMPAIGN, text=None, html=None))


def test_valid_edge_values() -> None:
    # A domain equal to its zone, hyphens and digits, punycode TLD.
    SendingDomainSpec.model_validate(spec_with(DOMAIN, domain="acme.example", zone="acme.example"))
    SendingDomainSpec.model_validate(spec_with(DOMAIN, domain="mail-1.xn--p1ai", zone=None))
    # Manual DNS needs no credentials.
    SendingDomainSpec.model_validate(spec_with(DOMAIN, dnsProvider={"type": "manual"}))
    # A relay on localhost, IPv6 too.
    for host in ("localhost", "::1", "smtp.relay.example"):
        SmtpServerSpec.model_validate(spec_with(SMTP_RELAY, provider={"relay": {"host": host}}))
    # Only html.
    CampaignSpec.model_validate(spec_with(CAMPAIGN, text=None))
    # Addresses with plus and dots.
    TenantSpec.model_validate(spec_with(TENANT, contactEmail="first.last+pm@sub.acme.example"))


# --------------------------------------------------------------------------------------------
# Tenant names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a" * 57, "acme.corp", "Acme", "-acme", "acme-", "ac_me"])
def test_tenant_name_must_fit_a_namespace(name: str) -> None:
    body = {**TENANT, "metadata": {"name": name}}
    with pytest.raises(ValidationError, match=r"metadata\.name"):
        Tenant.model_validate(body)


@pytest.mark.parametrize("name", ["a" * 56, "acme", "a", "acme-2"])
def test_tenant_name_valid(name: str) -> None:
    tenant = Tenant.model_validate({**TENANT, "metadata": {"name": name}})
    assert tenant_namespace(name) == f"tenant-{name}"
    assert len(tenant.namespace_name) <= 63


# --------------------------------------------------------------------------------------------
# Every field is documented
# --------------------------------------------------------------------------------------------


def _models_below(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for info in model.model_fields.values():
        stack = [info.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                _models_below(tp, seen)
            elif get_origin(tp) is not None:
                stack.extend(get_args(tp))


def test_every_field_has_a_description() -> None:
    seen: set[type[BaseModel]] = set()
    for resource in RESOURCES:
        _models_below(resource, seen)
    assert len(seen) > 30
    missing = [
        f"{model.__name__}.{name}"
        for model in seen
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert missing == []


def test_enums_are_str_enums() -> None:
    for enum in (Tier, DkimAlgorithm, DmarcPolicy, ProviderType, ConditionStatus):
        assert issubclass(enum, str) and issubclass(enum, Enum)
        assert all(isinstance(m.value, str) for m in enum)


# --------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_set_condition_adds_and_keeps_transition_time() -> None:
    conds = set_condition([], "Ready", False, "Provisioning", "waiting", now=T0)
    assert len(conds) == 1 and conds[0].last_transition_time == T0
    # Same status: message and reason change, transition time does not.
    conds = set_condition(conds, "Ready", ConditionStatus.FALSE, "Probing", "probe", now=T1)
    assert conds[0].reason == "Probing" and conds[0].last_transition_time == T0
    # Status change: new transition time.
    conds = set_condition(conds, "Ready", True, "Ready", observed_generation=4, now=T1)
    assert conds[0].status is ConditionStatus.TRUE
    assert conds[0].last_transition_time == T1
    assert conds[0].observed_generation == 4
    # Other types are appended and keep their order.
    conds = set_condition(conds, "DNSVerified", ConditionStatus.UNKNOWN, "Checking", now=T1)
    assert [c.type for c in conds] == ["Ready", "DNSVerified"]
    ready = get_condition(conds, "Ready")
    assert ready is not None and ready.status is ConditionStatus.TRUE
    assert get_condition(conds, "Missing") is None


def test_condition_serializes_as_kubernetes_expects() -> None:
    cond = Condition(
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Reconciled",
        last_transition_time=T0,
    )
    assert cond.to_k8s() == {
        "type": "Ready",
        "status": "True",
        "reason": "Reconciled",
        "message": "",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }


@pytest.mark.parametrize("reason", ["not_camel", "lower", "Has Space", ""])
def test_condition_reason_is_camel_case(reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Condition(type="Ready", status=ConditionStatus.TRUE, reason=reason, last_transition_time=T0)
    assert error_locs(exc.value) == ["reason"]


# --------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2160h") == timedelta(days=90)
    assert parse_duration("1.5s") == timedelta(milliseconds=1500)
    for bad in ("", "10", "1d", "h", "10 m"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)


def test_parse_quantity() -> None:
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("2") == 2
    assert parse_quantity("256Mi") == 256 * 2**20
    assert parse_quantity("1G") == 10**9
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity("1 Gi")


def test_warmup_allowance() -> None:
    warmup = WarmupSettings(initial_per_day=100, daily_increase_percent=50, target_per_day=300)
    assert [warmup.allowance(d) for d in range(4)] == [100, 150, 225, None]
    assert WarmupSettings(enabled=False).allowance(0) is None


# --------------------------------------------------------------------------------------------
# Tier table
# --------------------------------------------------------------------------------------------

ORDER = [Tier.STARTER, Tier.PROFESSIONAL, Tier.BUSINESS, Tier.ENTERPRISE]


def test_every_tier_has_limits() -> None:
    assert list(TIERS) == ORDER
    for tier in Tier:
        assert limits_for(tier) is TIERS[tier]
        assert limits_for(tier.value) is TIERS[tier]


def test_unknown_tier_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown tier 'gold': expected one of starter"):
        limits_for("gold")


def test_tiers_grow_monotonically() -> None:
    rows = [TIERS[t] for t in ORDER]
    for lower, higher in itertools.pairwise(rows):
        assert higher.priority_value > lower.priority_value
        assert higher.emails_per_month > lower.emails_per_month
        for field in ("sending_domains", "smtp_servers", "campaigns", "sender_max_replicas"):
            assert getattr(higher, field) >= getattr(lower, field), field
        assert parse_quantity(higher.quota_cpu) >= parse_quantity(lower.quota_cpu)
        assert parse_quantity(higher.quota_memory) >= parse_quantity(lower.quota_memory)


@pytest.mark.parametrize("tier", ORDER)
def test_quota_fits_the_sender_with_room_for_a_rollout(tier: Tier) -> None:
    lim = TIERS[tier]
    # Every replica at its limit, plus one surge pod during a rolling update.
    pods = lim.sender_max_replicas + 1
    assert parse_quantity(lim.quota_cpu) >= pods * parse_quantity(lim.sender_cpu_limit)
    assert parse_quantity(lim.quota_memory) >= pods * parse_quantity(lim.sender_memory_limit)
    assert lim.quota_pods >= pods + 2
    assert parse_quantity(lim.sender_cpu_request) <= parse_quantity(lim.sender_cpu_limit)
    assert parse_quantity(lim.sender_memory_request) <= parse_quantity(lim.sender_memory_limit)
    assert 0 <= lim.dedicated_servers <= lim.smtp_servers
    assert lim.sender_max_replicas >= 1
    assert re.fullmatch(DNS_SUBDOMAIN_PATTERN, lim.priority_class)
    assert 0 < lim.priority_value < 1_000_000_000  # below the system-* classes


@pytest.mark.parametrize("tier", ORDER)
def test_dedicated_pool_scheduling(tier: Tier) -> None:
    lim = TIERS[tier]
    if lim.dedicated_servers == 0:
        assert dict(lim.node_selector) == {}
        assert lim.tolerations == ()
    else:
        assert dict(lim.node_selector) == {DEDICATED_POOL_LABEL: DEDICATED_POOL_VALUE}
        assert [dict(t) for t in lim.tolerations] == [
            {
                "key": DEDICATED_POOL_LABEL,
                "operator": "Equal",
                "value": DEDICATED_POOL_VALUE,
                "effect": "NoSchedule",
            }
        ]


def test_tier_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TIERS[Tier.STARTER] = TIERS[Tier.ENTERPRISE]  # type: ignore[index]
    with pytest.raises(TypeError):
        TIERS[Tier.BUSINESS].node_selector["x"] = "y"  # type: ignore[index]
    assert len({t.priority_class for t in TIERS.values()}) == len(TIERS)
