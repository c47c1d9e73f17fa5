"""SendingDomain's decisions (pure): when the timer runs a pass, what status a pass reports,
which conditions a failure goes on. Table-driven, on a fake clock and fake observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from penguinmails.api.v1alpha1.sendingdomain import DmarcPolicy, SendingDomainSpec
from penguinmails.common.dkim.keys import DkimKey, KeySet, KeyState
from penguinmails.common.dkim.rotation import RotationPolicy
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.dns.config import DnsSettings
from penguinmails.operator.dns.records import Record
from penguinmails.operator.dns.verify import Nameserver, Verification
from penguinmails.operator.errors import ReconcileError
from penguinmails.operator.sendingdomain import decide_status, due, failed

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
