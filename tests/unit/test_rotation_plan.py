"""spec.rotation resolved by the Campaign controller (operator/rotation.py) and the sender's
choice of mailbox for a new contact (weighted rendezvous hashing)."""

from __future__ import annotations

import collections
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from penguinmails.api.v1alpha1 import CampaignSpec
from penguinmails.common.db.ledger import PlanMailbox, Relay
from penguinmails.operator.rotation import (
    RotationDomain,
    addresses,
    mailbox_failures,
    plan_mailboxes,
)
from penguinmails.sender.engine import rendezvous

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
RELAY = Relay(name="r", host="smtp.example", port=587)


def campaign(*selections: dict[str, Any]) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "sendingDomainRef": {"name": "acme"},
            "from": {"address": "jane@acme.example", "name": "Acme"},
            "rotation": {"mailboxes": list(selections)},
            "subject": "Hi",
            "text": "Hello",
            "audience": {"lists": ["leads"]},
        }
    )


def domain(ref: str, fqdn: str, *mailboxes: dict[str, Any]) -> RotationDomain:
    obj = {"spec": {"domain": fqdn, "dnsProvider": {"type": "manual"}, "mailboxes": mailboxes}}
    return RotationDomain(ref, obj, ["r"], [], [RELAY])


ACME = domain(
    "acme",
    "acme.example",
    {"localPart": "jane", "displayName": "Jane", "dailyLimit": 40},
    {
        "localPart": "sales",
        "dailyLimit": 100,
        "warmup": {"initialPerDay": 10, "dailyIncreasePercent": 50},
    },
    {"localPart": "cold", "paused": True},
)


def test_all_mailboxes_of_a_domain_but_the_paused_with_warmup_from_the_first_message() -> None:
    spec = campaign({"sendingDomainRef": {"name": "acme"}})
    assert addresses(spec, [ACME]) == ["jane@acme.example", "sales@acme.example"]
    first = {"sales@acme.example": NOW - timedelta(days=3, hours=1)}
    planned, days = plan_mailboxes(spec, [ACME], first, NOW)
    assert [(m.address, m.daily_limit, m.display_name) for m in planned] == [
        ("jane@acme.example", 40, "Jane"),
        ("sales@acme.example", 33, "Acme"),  # 10 x 1.5^3 = 33.75, day 3
    ]
    assert [(d.warmup_day, d.daily_limit) for d in days] == [(None, 40), (3, 33)]
    assert all(m.dkim_secret == "acme-dkim" and m.relays == [RELAY] for m in planned)
    # Never sent: day 0; long warm: dailyLimit, not the ramp's value.
    assert plan_mailboxes(spec, [ACME], {}, NOW)[0][1].daily_limit == 10
    old = {"sales@acme.example": NOW - timedelta(days=60)}
    assert plan_mailboxes(spec, [ACME], old, NOW)[0][1].daily_limit == 100


def test_missing_and_all_paused_mailboxes_are_named() -> None:
    spec = campaign({"sendingDomainRef": {"name": "acme"}, "localParts": ["jane", "bob"]})
    [(reason, message)] = mailbox_failures(spec, [ACME])
    assert reason == "MailboxNotFound"
    assert message.startswith("spec.rotation.mailboxes[0].localParts: SendingDomain acme")
    assert "no mailbox bob" in message
    spec = campaign({"sendingDomainRef": {"name": "acme"}, "localParts": ["cold"]})
    assert [r for r, _ in mailbox_failures(spec, [ACME])] == ["NoMailboxes"]


def test_rendezvous_shares_follow_the_limits_and_adding_a_mailbox_moves_only_its_own() -> None:
    def box(name: str, limit: int) -> PlanMailbox:
        return PlanMailbox(
            address=f"{name}@a.example",
            domain="a.example",
            dkim_secret="a-dkim",
            daily_limit=limit,
            relays=[RELAY],
        )

    three = [box("a", 100), box("b", 200), box("c", 300)]
    hashes = [hashlib.sha256(str(i).encode()).digest() for i in range(6000)]
    before = [rendezvous(h, three) for h in hashes]
    shares = collections.Counter(before)
    # Binomial bounds: 6,000 draws with p = 1/6, 2/6, 3/6.
    for index, p in enumerate((1 / 6, 2 / 6, 3 / 6)):
        assert abs(shares[index] - 6000 * p) <= 4 * (6000 * p * (1 - p)) ** 0.5
    after = [rendezvous(h, [*three, box("d", 600)]) for h in hashes]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert moved and all(a == 3 for _, a in moved)  # only to the new mailbox
