"""Usage notices at 80, 95 and 100% of the month's allowance: a webhook event and an e-mail.

The Tenant controller calls `notify` on every pass with the month's count (operator/usage.py).

**Once per tenant, period and threshold**, whichever replica gets there and whenever it
crashes. Each crossed threshold is a row of `billing_notices` (migration 0011) under the unique
key (tenant, period, threshold), inserted with ON CONFLICT DO NOTHING; the `usage.threshold`
webhook event is queued by `common.webhooks.emit` in the same transaction. So the event is
stored exactly once (a second replica's insert waits for the first's commit and then inserts
nothing) and delivered at least once by the dispatcher, every attempt with the same
`webhook-id` for the receiver to de-duplicate.

The e-mail cannot be in a transaction: the row records that it is owed (`email_message_id`), a
pass claims it for `CLAIM` (one UPDATE: a second replica finds it claimed), sends it through
the platform's relay and marks it sent. **At-least-once**: a crash after the relay accepted it
and before it is marked sent leaves the claim to expire, and the next pass sends it again with
the same Message-ID (receivers and people can tell it is the same notice). We chose this over
at-most-once because the 100% notice is the one that says sending stopped: a lost one costs
more than a repeated one. A relay that is down leaves the e-mail owed (the claim is released);
a permanent refusal (5xx) ends it, recorded in `email_error`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import asyncpg

from penguinmails.api.billing.plans import Allowance
from penguinmails.common.db import AnyConnection, tenant_connection
from penguinmails.common.relay import deliver, message_domain
from penguinmails.common.settings import NoticeSettings
from penguinmails.common.webhooks import EventType, emit

__all__ = ["CLAIM", "THRESHOLDS", "Notice", "crossed", "notify", "record_crossed", "send_owed"]

log = logging.getLogger(__name__)

THRESHOLDS = (80, 95, 100)
"""Percentages of the monthly allowance that each get one notice per period."""
CLAIM = timedelta(minutes=5)
"""How long a pass holds an e-mail it is sending: well past an SMTP exchange at the longest
timeouts, so a live sender is never doubled; after a crash the e-mail is sent again this late."""


@dataclass(frozen=True)
class Notice:
    """One recorded threshold, as the e-mail and the webhook tell it."""

    tenant: str
    tier: str
    period: date
    threshold: int
    sent: int
    allowance: int
    overage_allowed: bool
    message_id: str | None = None
    webhook_event_id: str | None = None


def crossed(sent: int, allowance: int) -> list[int]:
    """The thresholds `sent` has reached (integer arithmetic: 80% of 3 is reached at 3)."""
    return [t for t in THRESHOLDS if sent * 100 >= t * allowance]


def next_period(period: date) -> date:
    return (period.replace(day=28) + timedelta(days=4)).replace(day=1)


def message_id(notice: Notice, tenant_id: uuid.UUID, settings: NoticeSettings) -> str:
    """Stable per notice: a resent e-mail carries the same one."""
    return (
        f"<usage-{notice.period:%Y-%m}-{notice.threshold}.{tenant_id}@{message_domain(settings)}>"
    )


def event_data(notice: Notice) -> dict[str, object]:
    """The `usage.threshold` payload."""
    return {
        "tenant": notice.tenant,
        "tier": notice.tier,
        "threshold": notice.threshold,
        "sent": notice.sent,
        "allowance": notice.allowance,
        "overageAllowed": notice.overage_allowed,
        "period": f"{notice.period:%Y-%m}",
        "periodStart": f"{notice.period.isoformat()}T00:00:00Z",
        "periodEnd": f"{next_period(notice.period).isoformat()}T00:00:00Z",
    }


async def record_crossed(
    db: asyncpg.Pool,
    tenant_id: uuid.UUID,
    *,
    tenant: str,
    tier: str,
    sent: int,
    allowance: Allowance,
    period: date,
    settings: NoticeSettings,
) -> list[Notice]:
    """Record the thresholds newly reached this period and queue their webhook events, in one
    transaction; the notices this call recorded (none when another pass already had)."""
    reached = crossed(sent, allowance.emails_per_month)
    if not reached:
        return []
    recorded = []
    async with tenant_connection(db, tenant_id) as conn:
        for threshold in reached:
            notice = Notice(
                tenant=tenant,
                tier=tier,
                period=period,
                threshold=threshold,
                sent=sent,
                allowance=allowance.emails_per_month,
                overage_allowed=allowance.overage_allowed,
            )
            mid = message_id(notice, tenant_id, settings) if settings.enabled else None
            inserted = await conn.fetchval(
                "INSERT INTO billing_notices (period, threshold, sent, allowance, "
                "overage_allowed, email_message_id) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT DO NOTHING RETURNING true",
                period,
                threshold,
                sent,
                allowance.emails_per_month,
                allowance.overage_allowed,
                mid,
            )
            if not inserted:
                continue
            event_id = await emit(conn, EventType.USAGE_THRESHOLD, event_data(notice))
            if event_id is not None:
                await conn.execute(
                    "UPDATE billing_notices SET webhook_event_id = $3 "
                    "WHERE period = $1 AND threshold = $2",
                    period,
                    threshold,
                    event_id,
                )
            recorded.append(notice)
    return recorded


def compose(notice: Notice, to: str, settings: NoticeSettings) -> EmailMessage:
    """The e-mail: what was reached, what happens next, and at 100% how to go on."""
    month = f"{notice.period:%B %Y}"
    resume = next_period(notice.period)
    used = (
        f"Tenant {notice.tenant} has sent {notice.sent} of the {notice.allowance} messages its "
        f"{notice.tier} plan allows in {month} (UTC)."
    )
    if notice.threshold < 100:
        subject = f"PenguinMails: {notice.threshold}% of {notice.tenant}'s monthly allowance used"
        if notice.overage_allowed:
            after = (
                f"Past {notice.allowance} messages sending continues and every further message "
                f"is billed as overage. A larger plan may cost less: {settings.billing_url}"
            )
        else:
            after = (
                f"At {notice.allowance} messages new sends stop until {resume:%B} 1 (UTC). To "
                f"avoid that, upgrade the plan: {settings.billing_url}"
            )
    elif notice.overage_allowed:
        subject = f"PenguinMails: {notice.tenant} reached its monthly allowance; overage is billed"
        after = (
            "Your plan allows overage: sending continues, and every message past "
            f"{notice.allowance} this month is billed as overage on your next invoice. A larger "
            f"plan may cost less: {settings.billing_url}"
        )
    else:
        subject = f"PenguinMails: {notice.tenant} reached its monthly allowance; sending stopped"
        after = (
            f"New sends are stopped until {resume:%B} 1 (UTC): campaigns stay paused with the "
            "condition TierLimitReached. To send now, upgrade the plan: open "
            f"{settings.billing_url} and choose Change plan (or the billing portal); sends "
            "resume within a minute of the upgrade."
        )
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    if notice.message_id:
        message["Message-ID"] = notice.message_id
    # RFC 3834: an automatic message, so that no auto-responder answers it.
    message["Auto-Submitted"] = "auto-generated"
    message["X-PenguinMails-Notice"] = f"usage.threshold; threshold={notice.threshold}"
    if notice.webhook_event_id:
        message["X-PenguinMails-Webhook-Id"] = notice.webhook_event_id
    message.set_content(f"{used}\n\n{after}\n")
    return message


async def _claim(conn: AnyConnection) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "UPDATE billing_notices SET email_claimed_until = now() + $1::interval, "
            "email_attempts = email_attempts + 1 "
            "WHERE email_message_id IS NOT NULL AND email_sent_at IS NULL "
            "AND email_error IS NULL "
            "AND (email_claimed_until IS NULL OR email_claimed_until < now()) "
            "RETURNING period, threshold, sent, allowance, overage_allowed, email_message_id, "
            "webhook_event_id",
            CLAIM,
        )
    )


async def send_owed(
    db: asyncpg.Pool,
    tenant_id: uuid.UUID,
    *,
    tenant: str,
    tier: str,
    to: str,
    settings: NoticeSettings,
) -> int:
    """Send the tenant's owed e-mails (claimed first); how many the relay accepted."""
    if not settings.enabled:
        return 0
    async with tenant_connection(db, tenant_id) as conn:
        rows = await _claim(conn)
    accepted = 0
    for row in sorted(rows, key=lambda r: (r["period"], r["threshold"])):
        notice = Notice(
            tenant=tenant,
            tier=tier,
            period=row["period"],
            threshold=row["threshold"],
            sent=row["sent"],
            allowance=row["allowance"],
            overage_allowed=row["overage_allowed"],
            message_id=row["email_message_id"],
            webhook_event_id=row["webhook_event_id"],
        )
        label = f"{row['threshold']}% of {row['period']:%Y-%m}"
        outcome = await deliver(compose(notice, to, settings), settings)
        refusal, sent = outcome.refusal, outcome.sent
        if not sent:
            why = refusal or f"{outcome.problem}, retried next pass"
            log.warning("usage notice %s of Tenant %s not sent: %s", label, tenant, why)
        async with tenant_connection(db, tenant_id) as conn:
            # Sent, refused for good, or given back now rather than when the claim runs out.
            await conn.execute(
                "UPDATE billing_notices SET email_claimed_until = NULL, "
                "email_sent_at = CASE WHEN $3 THEN now() END, email_error = $4 "
                "WHERE period = $1 AND threshold = $2",
                row["period"],
                row["threshold"],
                sent,
                refusal,
            )
        accepted += sent
    return accepted


async def notify(
    db: asyncpg.Pool,
    tenant_id: uuid.UUID,
    *,
    tenant: str,
    tier: str,
    contact_email: str,
    sent: int,
    allowance: Allowance,
    period: date,
    settings: NoticeSettings,
) -> list[Notice]:
    """Record what this pass crossed, then send every e-mail still owed (this pass's, and any
    an earlier pass or replica left unsent); the notices recorded by this call."""
    recorded = await record_crossed(
        db,
        tenant_id,
        tenant=tenant,
        tier=tier,
        sent=sent,
        allowance=allowance,
        period=period,
        settings=settings,
    )
    for notice in recorded:
        log.info(
            "Tenant %s reached %d%% of its allowance for %s (%d of %d)",
            tenant,
            notice.threshold,
            f"{period:%Y-%m}",
            sent,
            allowance.emails_per_month,
        )
    await send_owed(db, tenant_id, tenant=tenant, tier=tier, to=contact_email, settings=settings)
    return recorded
