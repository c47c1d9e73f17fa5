"""Campaign.spec.rotation resolved for the plan: which mailboxes, today's limit of each, and
the servers that carry each one's mail.

A mailbox belongs to its SendingDomain (`spec.mailboxes`): its reputation is its own across
every campaign that uses it, so its daily limit and warm-up live there, and its mail is signed
with its domain's DKIM keys and carried by its domain's servers (or the campaign's own
`smtpServerRefs`, or the shared pool for tiers without dedicated servers). Its warm-up counts
from its first message in any campaign of the tenant (the ledger records which mailbox sent
what), so a mailbox added today starts at day 0 whatever the age of its domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from penguinmails.api.v1alpha1 import CampaignSpec, SendingDomainSpec
from penguinmails.api.v1alpha1.sendingdomain import Mailbox
from penguinmails.common.db.ledger import PlanMailbox, Relay
from penguinmails.common.throttle import warmup_daily_limit

__all__ = [
    "MailboxToday",
    "RotationDomain",
    "addresses",
    "mailbox_failures",
    "plan_mailboxes",
    "refs",
    "selected",
    "today",
]


@dataclass(frozen=True)
class RotationDomain:
    """One SendingDomain named by spec.rotation, with the servers its mailboxes send through."""

    ref: str
    """The SendingDomain's name (spec.rotation.mailboxes[].sendingDomainRef.name)."""
    obj: Mapping[str, Any] | None
    server_names: Sequence[str]
    servers: Sequence[Mapping[str, Any]]
    relays: list[Relay]


@dataclass(frozen=True)
class MailboxToday:
    """A mailbox's limit today: its dailyLimit, or its warm-up allowance while lower."""

    address: str
    daily_limit: int
    warmup_day: int | None


def selected(spec: CampaignSpec, domain: RotationDomain) -> list[Mailbox]:
    """The mailboxes spec.rotation takes from this domain (not paused), in spec order."""
    assert spec.rotation is not None and domain.obj is not None
    mailboxes = SendingDomainSpec.model_validate(dict(domain.obj["spec"])).mailboxes
    wanted: set[str] = set()
    for selection in spec.rotation.mailboxes:
        if selection.sending_domain_ref.name == domain.ref:
            if not selection.local_parts:
                wanted |= {m.local_part for m in mailboxes}
            wanted |= set(selection.local_parts)
    return [m for m in mailboxes if m.local_part in wanted and not m.paused]


def mailbox_failures(
    spec: CampaignSpec, domains: Sequence[RotationDomain]
) -> list[tuple[str, str]]:
    """(reason, message) for every selection that names a mailbox its domain does not have,
    and when no mailbox is left to send from (all paused or none defined)."""
    assert spec.rotation is not None
    failures: list[tuple[str, str]] = []
    by_ref = {d.ref: d for d in domains if d.obj is not None}
    for index, selection in enumerate(spec.rotation.mailboxes):
        domain = by_ref.get(selection.sending_domain_ref.name)
        if domain is None:
            continue  # SendingDomainNotFound says so
        have = {
            m.local_part
            for m in SendingDomainSpec.model_validate(dict(domain.obj or {})["spec"]).mailboxes
        }
        missing = sorted(set(selection.local_parts) - have)
        if missing:
            failures.append(
                (
                    "MailboxNotFound",
                    f"spec.rotation.mailboxes[{index}].localParts: SendingDomain {domain.ref} "
                    f"has no mailbox {', '.join(missing)}; add it to its spec.mailboxes or "
                    "remove it from the campaign",
                )
            )
    if not failures and by_ref and not any(selected(spec, d) for d in by_ref.values()):
        failures.append(
            (
                "NoMailboxes",
                "spec.rotation selects no mailbox that is not paused; add mailboxes to the "
                "SendingDomains' spec.mailboxes or unpause one",
            )
        )
    return failures


def today(
    mailbox: Mailbox, address: str, first_sent: datetime | None, now: datetime
) -> MailboxToday:
    """Its limit today: warm-up from `first_sent` (day 0 before any message), never above
    its dailyLimit."""
    warmup = mailbox.warmup
    if warmup is None or not warmup.enabled:
        return MailboxToday(address, mailbox.daily_limit, None)
    day = max(0, (now - first_sent).days) if first_sent is not None else 0
    allowance = warmup_daily_limit(
        warmup.initial_per_day,
        warmup.daily_increase_percent,
        day,
        warmup.target_per_day or mailbox.daily_limit,
    )
    return MailboxToday(address, max(1, min(mailbox.daily_limit, allowance)), day)


def plan_mailboxes(
    spec: CampaignSpec,
    domains: Sequence[RotationDomain],
    first_sent: Mapping[str, datetime],
    now: datetime,
) -> tuple[list[PlanMailbox], list[MailboxToday]]:
    """The plan's mailboxes (those of domains with at least one relay) and each one's day."""
    planned: list[PlanMailbox] = []
    days: list[MailboxToday] = []
    for domain in domains:
        if domain.obj is None or not domain.relays:
            continue
        fqdn = str(domain.obj["spec"]["domain"]).lower()
        for mailbox in selected(spec, domain):
            address = f"{mailbox.local_part}@{fqdn}"
            day = today(mailbox, address, first_sent.get(address), now)
            days.append(day)
            planned.append(
                PlanMailbox(
                    address=address,
                    display_name=mailbox.display_name or spec.from_.name,
                    domain=fqdn,
                    dkim_secret=f"{domain.ref}-dkim",
                    daily_limit=day.daily_limit,
                    relays=domain.relays,
                )
            )
    return planned, days


def addresses(spec: CampaignSpec, domains: Sequence[RotationDomain]) -> list[str]:
    """The addresses of the mailboxes the campaign would send from."""
    found = []
    for domain in domains:
        if domain.obj is not None:
            fqdn = str(domain.obj["spec"]["domain"]).lower()
            found += [f"{m.local_part}@{fqdn}" for m in selected(spec, domain)]
    return found


def refs(spec: CampaignSpec) -> list[str]:
    """The SendingDomains spec.rotation names, each once, in spec order."""
    assert spec.rotation is not None
    return list(dict.fromkeys(s.sending_domain_ref.name for s in spec.rotation.mailboxes))
