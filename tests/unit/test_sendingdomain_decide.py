"""SendingDomain's decisions (pure): when the timer runs a pass, what status a pass reports,
which conditions a failure goes on. Table-driven, on a fake clock and fake observations."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import kopf
import pytest

from penguinmails.api.v1alpha1.sendingdomain import DmarcPolicy, SendingDomainSpec
from penguinmails.common.dkim.keys import DkimKey, KeySet, KeyState
from penguinmails.common.dkim.rotation import RotationPolicy
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.context import Context
from penguinmails.operator.dns import verify as verify_module
from penguinmails.operator.dns.config import DnsSettings
from penguinmails.operator.dns.records import Record
from penguinmails.operator.dns.verify import Nameserver, Verification, _Answer, verify
from penguinmails.operator.errors import ReconcileError
from penguinmails.operator.sendingdomain import (
    SendingDomainController,
    decide_status,
    due,
    failed,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SETTINGS = DnsSettings.from_env()
READY = {"type": "Ready", "status": "True", "reason": "Ready", "message": ""}
CHECKED = {"records": [{"lastChecked": "2026-11-29T12:00:00Z"}]}


def body(status: dict[str, Any], spec: dict[str, Any] | None = None) -> kopf.Body:
    raw: dict[str, Any] = {
        "metadata": {"name": "d", "namespace": "ns", "uid": "u"},
        "spec": spec or {"verifyInterval": "10m"},
        "status": status,
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "after", "expected"),
    [
        pytest.param({}, 0, True, id="never reconciled"),
        pytest.param({"conditions": [{**READY, "status": "False"}]}, 0, True, id="not ready"),
        pytest.param({"conditions": [READY], **CHECKED}, 599, False, id="verified recently"),
        pytest.param({"conditions": [READY], **CHECKED}, 600, True, id="verify interval over"),
        pytest.param(
            {"conditions": [READY], **CHECKED, "dkim": {"selectors": [{"state": "Pending"}]}},
            1,
            True,
            id="a key waits to be activated",
        ),
        pytest.param(
            {"conditions": [READY], **CHECKED, "dkim": {"nextRotation": "2026-11-29T12:05:00Z"}},
            300,
            True,
            id="rotation due",
        ),
        pytest.param(
            {
                "conditions": [READY],
                **CHECKED,
                "dkim": {"selectors": [{"state": "Retiring", "retireAt": "2026-11-29T12:01:00Z"}]},
            },
            60,
            True,
            id="a retiring key is to be revoked",
        ),
    ],
)
def test_the_timer_runs_a_pass_only_when_one_is_due(
    status: dict[str, Any], after: float, expected: bool
) -> None:
    clock = FakeClock(T0)
    clock.advance(after)
    assert due(body(status), SETTINGS, clock.now()) is expected


SPEC = SendingDomainSpec.model_validate(
    {"domain": "mail.example.com", "dnsProvider": {"type": "manual"}}
)
POLICY = RotationPolicy(
    algorithms=("ed25519",),
    selector_prefix="pm",
    rotate_after=timedelta(days=90),
    retire_after=timedelta(days=7),
    ttl=timedelta(seconds=300),
)
ACTIVE = KeySet(
    (DkimKey("pm1", "ed25519", KeyState.ACTIVE, T0, None, activated_at=T0 - timedelta(days=1)),)
)
PENDING = KeySet((DkimKey("pm1", "ed25519", KeyState.PENDING, T0, None),))
RECORD = Record("mail.example.com", "TXT", "v=spf1 -all", purpose="spf")
NAMESERVERS = [Nameserver("ns1.example.com", "192.0.2.53")]


def decide(
    keys: KeySet, verified: bool, missing: list[str], status: dict[str, Any] | None = None
) -> tuple[dict[str, tuple[str, str]], dict[str, Any]]:
    observed, fields = decide_status(
        SPEC,
        status or {},
        T0,
        zone="mail.example.com",
        name="d",
        published={},
        key_set=keys,
        policy=POLICY,
        results=[Verification(RECORD, verified, None if verified else "not served")],
        nameservers=NAMESERVERS,
        dmarc_policy=DmarcPolicy.NONE,
        missing=missing,
        mailboxes=[],
    )
    return {o.type: (o.status, o.reason) for o in observed}, fields


@pytest.mark.parametrize(
    ("keys", "verified", "ready", "dns", "dkim"),
    [
        pytest.param(ACTIVE, True, ("True", "Ready"), ("True", "Verified"), "KeysActive", id="ok"),
        pytest.param(
            ACTIVE, False, ("False", "Pending"), ("False", "RecordsNotServed"), "KeysActive",
            id="records not served",
        ),
        pytest.param(
            PENDING, True, ("False", "Pending"), ("True", "Verified"), "WaitingForDNS",
            id="keys not active yet",
        ),
    ],
)  # fmt: skip
def test_status_of_a_pass(
    keys: KeySet,
    verified: bool,
    ready: tuple[str, str],
    dns: tuple[str, str],
    dkim: str,
) -> None:
    found, fields = decide(keys, verified, [])
    assert found["Ready"] == ready
    assert found["DNSVerified"] == dns
    assert found["DKIMKeyReady"][1] == dkim
    assert found["DNSPublished"] == ("True", "Manual")
    assert ("lastVerifiedAt" in fields) is verified


def test_first_verification_time_is_kept() -> None:
    _, fields = decide(ACTIVE, True, [], {"firstVerifiedAt": "2026-01-01T00:00:00Z"})
    assert fields["firstVerifiedAt"] == "2026-01-01T00:00:00Z"
    assert fields["lastVerifiedAt"] == "2026-11-29T12:00:00Z"


def test_missing_servers_are_named_with_the_field_to_fix() -> None:
    observed, _ = decide_status(
        SPEC,
        {},
        T0,
        zone="mail.example.com",
        name="d",
        published={},
        key_set=ACTIVE,
        policy=POLICY,
        results=[Verification(RECORD, True, None)],
        nameservers=NAMESERVERS,
        dmarc_policy=DmarcPolicy.NONE,
        missing=["mx-gone"],
        mailboxes=[],
    )
    ready = next(o for o in observed if o.type == "Ready")
    assert "mx-gone" in ready.message and "spec.smtpServerRefs" in ready.message


@pytest.mark.parametrize(
    ("error", "types"),
    [
        pytest.param(ReconcileError("SPFConflict", "m"), ["Ready", "DNSPublished"], id="publish"),
        pytest.param(ReconcileError("DKIMSecretMalformed", "m"), ["Ready"], id="before publish"),
    ],
)
def test_a_failure_is_reported_on_ready_and_the_step_it_stopped(
    error: ReconcileError, types: list[str]
) -> None:
    assert [o.type for o in failed(error, permanent=False)] == types
    assert failed(error, permanent=True)[0].permanent


# -- DNS verification: an address family this cluster cannot reach says nothing ------------

V4 = Nameserver("ns1.example.com", "192.0.2.53")
V6 = Nameserver("ns1.example.com", "2001:db8::53")
V6_ONLY = Nameserver("ns2.example.com", "2001:db8::54")
SERVED = _Answer({"v=spf1 -all"})
WRONG = _Answer({"v=spf1 ~all"})
NO_ROUTE = _Answer(None, "no route (OSError)", unroutable=True)
TIMEOUT = _Answer(None, "ns1.example.com (192.0.2.53) did not answer (Timeout)")


@pytest.mark.parametrize(
    ("answers", "dns", "diff"),
    [
        pytest.param({V4: SERVED}, ("True", "Verified"), None, id="IPv4 only, served"),
        pytest.param(
            {V4: SERVED, V6: NO_ROUTE}, ("True", "Verified"), None, id="IPv6 unroutable: ignored"
        ),
        pytest.param(
            {V4: SERVED, V6_ONLY: NO_ROUTE},
            ("True", "Verified"),
            None,
            id="a nameserver reachable only over IPv6 is skipped",
        ),
        pytest.param(
            {V6: NO_ROUTE},
            ("False", "RecordsNotServed"),
            "no nameserver is reachable from here",
            id="no family reachable: not verified",
        ),
        pytest.param(
            {V4: TIMEOUT, V6: NO_ROUTE},
            ("False", "RecordsNotServed"),
            "(192.0.2.53) did not answer",
            id="IPv4 times out: not verified, named",
        ),
        pytest.param(
            {V4: WRONG, V6: NO_ROUTE},
            ("False", "RecordsNotServed"),
            "ns1.example.com (192.0.2.53) serves v=spf1 ~all",
            id="IPv4 serves another value",
        ),
    ],
)
def test_unreachable_address_families_do_not_fail_verification(
    monkeypatch: pytest.MonkeyPatch,
    answers: dict[Nameserver, _Answer],
    dns: tuple[str, str],
    diff: str | None,
) -> None:
    async def ask(server: Nameserver, port: int, name: str, rtype: str, wait: float) -> _Answer:
        return answers[server]

    monkeypatch.setattr(verify_module, "_ask", ask)
    results = asyncio.run(verify([RECORD], list(answers)))
    clock = FakeClock(T0)
    clock.advance(60)
    observed, fields = decide_status(
        SPEC,
        {},
        clock.now(),
        zone="mail.example.com",
        name="d",
        published={},
        key_set=ACTIVE,
        policy=POLICY,
        results=results,
        nameservers=list(answers),
        dmarc_policy=DmarcPolicy.NONE,
        missing=[],
        mailboxes=[],
    )
    found = {o.type: (o.status, o.reason) for o in observed}
    assert found["DNSVerified"] == dns
    assert found["Ready"] == (("True", "Ready") if dns[0] == "True" else ("False", "Pending"))
    assert (fields.get("lastVerifiedAt") == "2026-11-29T12:01:00Z") is (dns[0] == "True")
    record = fields["records"][0]
    if diff is None:
        assert record["verified"] and "diff" not in record
    else:
        assert not record["verified"] and diff in record["diff"]


# -- an invalid spec, through the controller ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"dnsProvider": {"type": "manual"}}, "spec.domain", id="no domain"),
        pytest.param(
            {"domain": "mail.example.com", "dnsProvider": {"type": "rfc2136"}},
            "spec.dnsProvider",
            id="rfc2136 without its settings",
        ),
        pytest.param(
            {"domain": "mail.example.com", "dnsProvider": {"type": "manual"}, "dkim": {
                "algorithms": ["dsa"]}},
            "spec.dkim.algorithms.0",
            id="unknown key algorithm",
        ),
    ],
)  # fmt: skip
def test_an_invalid_spec_is_a_condition_naming_the_field(spec: dict[str, Any], field: str) -> None:
    controller = SendingDomainController(SETTINGS, clock=FakeClock(T0))
    kube = StatusKube()

    async def go() -> None:
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        obj = body({}, spec)
        with patch("kopf.warn"), patch("kopf.info"):
            await controller.run(ctx, obj, retry=0, logger=logging.getLogger("t"), timer=False)

    asyncio.run(go())
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith(f"{field}") and ready["message"].endswith(
        "; fix the SendingDomain's spec"
    )
    assert ready["lastTransitionTime"] == "2026-11-29T12:00:00Z"  # the fake clock's
    assert not any(c["type"] == "DNSVerified" for c in kube.status["conditions"])


class StatusKube:
    """Keeps the status the controller writes (the API server's merge patch, top level)."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def patch_status(
        self, api_version: str, plural: str, name: str, body: Any, namespace: str | None = None
    ) -> dict[str, Any]:
        self.status = {k: v for k, v in {**self.status, **body["status"]}.items() if v is not None}
        return {"status": self.status, **self.status}
