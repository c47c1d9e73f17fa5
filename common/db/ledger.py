"""The delivery ledger: campaigns as the sender sees them, one row per campaign x recipient.

Every function runs inside the caller's tenant scope (`tenant_scope()`), so row-level security
keeps each tenant to its own campaigns and deliveries.

Crash safety: `claim()` moves due rows to `sending` with a lease (`lease_until`). Outcomes are
written by `record()`. A sender that dies leaves its claimed rows in `sending`; once their lease
has passed, `claim()` hands them out again. So a crash loses nothing and re-sends at most the
deliveries that were claimed but whose outcome was not recorded yet: those in flight plus those
waiting in the sender's outcome batch. They keep their Message-ID, which lets receivers that
de-duplicate on it drop the second copy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from penguinmails.common.db import AnyConnection
from penguinmails.common.db.blocks import Block, add_blocks

__all__ = [
    "CAMPAIGN_FAULT",
    "THROTTLED",
    "CampaignPlan",
    "Claimed",
    "DeliveryState",
    "Outcome",
    "PlanMailbox",
    "Relay",
    "StopRules",
    "campaign_counts",
    "claim",
    "clear_pause_reason",
    "enforce_stop_rules",
    "enqueue",
    "get_campaign_plan",
    "get_pause_reason",
    "mailbox_counts",
    "mailbox_first_sent",
    "mark_bounced",
    "mark_complained",
    "mark_unsubscribed",
    "pause_campaign",
    "record",
    "set_sending",
    "suppress_deliveries",
    "upsert_campaign",
    "window_counts",
]


class Relay(BaseModel):
    """An SMTP server to hand messages to (from an SmtpServer), without its credentials."""

    model_config = ConfigDict(frozen=True)

    name: str
    host: str
    port: int
    tls: str = "starttls"
    """none, starttls (required) or tls (implicit)."""
    credentials_secret: str | None = None
    """Secret (basic-auth: username, password) in the tenant namespace, for SMTP AUTH."""
    ca_secret: str | None = None
    ca_key: str | None = None
    """Secret and key with PEM CA certificates to trust for the relay (else the system's)."""
    daily_limit: int | None = None
    """Warm-up allowance of the server today; None once warm-up is complete."""
    max_per_hour: int | None = None
    weight: int = 100
    """Share of messages relative to the campaign's other relays (0: none)."""


class StopRules(BaseModel):
    """Campaign.spec.stopRules as every checker applies them: the operator on its pass, the
    sender as its outcomes arrive, the intake as DSNs and complaints arrive."""

    model_config = ConfigDict(frozen=True)

    max_bounce_rate: float
    max_complaint_rate: float
    window: str
    """The spec's duration text (for messages)."""
    window_seconds: int = Field(ge=1)
    min_sample: int = Field(ge=1)

    def breached(self, window: Mapping[str, int]) -> str | None:
        """The rule that fires, as a message; None when none does. `window` holds the counts
        over the window (`window_counts`): done, bounced, complained."""
        done = window.get("done", 0)
        if done < self.min_sample:
            return None
        bounce_rate = window.get("bounced", 0) / done
        if bounce_rate > self.max_bounce_rate:
            return (
                f"bounce rate {bounce_rate:.1%} over {self.window} exceeds "
                f"stopRules.maxBounceRate {self.max_bounce_rate:.1%}; clean the list, then "
                "raise the limit to resume"
            )
        complaint_rate = window.get("complained", 0) / done
        if complaint_rate > self.max_complaint_rate:
            return (
                f"complaint rate {complaint_rate:.2%} over {self.window} exceeds "
                f"stopRules.maxComplaintRate {self.max_complaint_rate:.2%}; review the content "
                "and audience, then raise the limit to resume"
            )
        return None


class PlanMailbox(BaseModel):
    """One mailbox a rotating campaign sends from (SendingDomain.spec.mailboxes), as the
    operator resolved it today: its own domain's DKIM keys and servers, its warm-up applied."""

    model_config = ConfigDict(frozen=True)

    address: str
    display_name: str | None = None
    domain: str
    """Its SendingDomain's domain: DKIM d=, Message-ID and return-path domain of its mail."""
    dkim_secret: str
    daily_limit: int = Field(ge=1)
    """Messages it may send today across every campaign (spec.mailboxes[].dailyLimit, or its
    warm-up allowance while that is lower); also its share of the campaign's new contacts."""
    relays: list[Relay] = Field(min_length=1)
    """Its domain's servers (or the campaign's own smtpServerRefs, or the shared pool)."""


class CampaignPlan(BaseModel):
    """What the operator writes to `campaigns.spec` and the sender reads: everything needed to
    render, sign, throttle and relay the campaign's messages. No secret values, only names."""

    model_config = ConfigDict(frozen=True)

    from_address: str
    from_name: str | None = None
    reply_to: str | None = None
    subject: str
    text: str | None = None
    html: str | None = None
    domain: str
    """The sending domain: DKIM d=, Message-ID and return-path domain."""
    dkim_secret: str
    """Secret with the domain's DKIM keys (common.dkim.keys layout)."""
    unsubscribe_url: str
    """HTTPS base URL; the token is appended as a path segment."""
    unsubscribe_mailto: str
    postal_address: str
    relays: list[Relay] = Field(min_length=1)
    per_hour: int | None = None
    per_day: int | None = None
    per_mailbox_per_day: int = 50
    campaign_daily_limit: int | None = None
    """The campaign's own warm-up allowance today."""
    sending_seconds: int = Field(default=86400, ge=3600, le=86400)
    """Seconds per day the campaign may send (its window): daily caps are spread over them."""
    stop_rules: StopRules | None = None
    """Checked by the sender and the intake as outcomes arrive (None: plans written before)."""
    mailboxes: list[PlanMailbox] = Field(default_factory=list, max_length=2000)
    """Campaign.spec.rotation resolved: each message is from one of these (empty: every
    message is from `from_address` through `relays`, as without rotation)."""
    sticky: bool = True
    """A contact keeps the mailbox it was last sent from (in any campaign) when it is one of
    `mailboxes`; else it gets one by weighted rendezvous hashing of its address hash."""

    def senders(self) -> list[PlanMailbox]:
        """The mailboxes messages go out from: the rotation's, or `from_address` alone."""
        if self.mailboxes:
            return list(self.mailboxes)
        return [
            PlanMailbox(
                address=self.from_address,
                display_name=self.from_name,
                domain=self.domain,
                dkim_secret=self.dkim_secret,
                daily_limit=self.per_mailbox_per_day,
                relays=self.relays,
            )
        ]


CAMPAIGN_FAULT = "the sender cannot send this campaign: "
"""Prefix of a pause reason for a fault of the campaign itself (missing Secret, bad template),
as opposed to a receiver refusing our authentication (5.7.x)."""
THROTTLED = "throttled"
"""The reason of a row waiting for a token it was promised (not an attempt)."""


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL_STATES = frozenset(
    {DeliveryState.SENT, DeliveryState.BOUNCED, DeliveryState.FAILED, DeliveryState.SKIPPED}
)


@dataclass(frozen=True)
class Claimed:
    """A delivery handed to one sender; `email` is None when the contact was erased."""

    id: int
    campaign_uid: uuid.UUID
    attempts: int
    email: str | None
    fields: dict[str, Any]
    suppressed: bool
    claims: int = 1
    """Times this row was claimed, this claim included (migration 0004)."""
    expired_claims: int = 0
    """Claims (this one included) that took it over after a lease expired without outcome."""
    address_hash: bytes = b""
    mailbox: str | None = None
    """The mailbox this delivery was assigned (recorded with an earlier outcome)."""
    previous_mailbox: str | None = None
    """The mailbox the same address was last sent from, in any campaign (sticky rotation)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to a claimed delivery. `retry_in` is set for deferrals."""

    id: int
    state: DeliveryState
    code: int | None = None
    status: str | None = None
    reason: str | None = None
    retry_in: timedelta | None = None
    count_attempt: bool = True
    """False for a throttle wait: no attempt was made, so it does not count towards the limit."""
    mailbox: str | None = None
    """The mailbox it was (or is to be) sent from: recorded, so the row keeps it."""
    relay: str | None = None
    """The server (SmtpServer name) it was handed to: recorded, so a DSN arriving later
    names the server the receiver blocked."""
    block: Block | None = None
    """A policy/reputation block in the relay's reply: recorded for every sender pod."""


async def upsert_campaign(
    conn: AnyConnection,
    *,
    uid: uuid.UUID,
    namespace: str,
    name: str,
    plan: CampaignPlan,
) -> None:
    """Create or update the campaign's row (content and sending parameters), idempotently."""
    await conn.execute(
        """
        INSERT INTO campaigns AS c (uid, namespace, name, spec) VALUES ($1, $2, $3, $4::jsonb)
        ON CONFLICT (uid) DO UPDATE SET spec = EXCLUDED.spec
        WHERE c.spec IS DISTINCT FROM EXCLUDED.spec
        """,
        uid,
        namespace,
        name,
        json.dumps(plan.model_dump(mode="json"), sort_keys=True),
    )


async def set_sending(conn: AnyConnection, uid: uuid.UUID, sending: bool) -> None:
    """Open or close the gate: senders claim only deliveries of campaigns with sending=true."""
    await conn.execute(
        "UPDATE campaigns SET sending = $2 WHERE uid = $1 AND sending IS DISTINCT FROM $2",
        uid,
        sending,
    )


async def pause_campaign(conn: AnyConnection, uid: uuid.UUID, reason: str) -> None:
    """Close the gate for a problem on our side; the first reason given is kept."""
    await conn.execute(
        "UPDATE campaigns SET sending = false, pause_reason = COALESCE(pause_reason, $2) "
        "WHERE uid = $1",
        uid,
        reason[:500],
    )


async def get_pause_reason(conn: AnyConnection, uid: uuid.UUID) -> str | None:
    value = await conn.fetchval("SELECT pause_reason FROM campaigns WHERE uid = $1", uid)
    return str(value) if value is not None else None


async def clear_pause_reason(conn: AnyConnection, uid: uuid.UUID) -> None:
    await conn.execute("UPDATE campaigns SET pause_reason = NULL WHERE uid = $1", uid)


async def get_campaign_plan(conn: AnyConnection, uid: uuid.UUID) -> CampaignPlan | None:
    raw = await conn.fetchval("SELECT spec FROM campaigns WHERE uid = $1", uid)
    return CampaignPlan.model_validate_json(raw) if raw is not None else None


async def enqueue(
    conn: AnyConnection,
    uid: uuid.UUID,
    lists: Sequence[str],
    exclude_lists: Sequence[str] = (),
) -> int:
    """One delivery per distinct address of the audience minus exclusions and suppressions.

    Idempotent: a second call adds only contacts that joined the lists since (ON CONFLICT on
    campaign x address). Returns the number of rows added."""
    status = await conn.execute(
        """
        INSERT INTO deliveries (campaign_uid, contact_id, address_hash)
        SELECT DISTINCT ON (c.address_hash) $1::uuid, c.id, c.address_hash
        FROM contacts c JOIN contact_lists l ON l.id = c.list_id
        WHERE l.name = ANY($2::text[])
          AND c.address_hash IS NOT NULL
          AND NOT EXISTS (SELECT FROM suppressions s WHERE s.address_hash = c.address_hash)
          AND NOT EXISTS (
              SELECT FROM contacts x JOIN contact_lists xl ON xl.id = x.list_id
              WHERE xl.name = ANY($3::text[]) AND x.address_hash = c.address_hash)
        ORDER BY c.address_hash, c.created_at
        ON CONFLICT (campaign_uid, address_hash) DO NOTHING
        """,
        uid,
        list(lists),
        list(exclude_lists),
    )
    await conn.execute(
        "UPDATE campaigns SET enqueued_at = now() WHERE uid = $1 AND enqueued_at IS NULL", uid
    )
    return int(status.split()[-1])


async def claim(
    conn: AnyConnection,
    owner: str,
    limit: int,
    lease: timedelta,
    campaign_uid: uuid.UUID | None = None,
    *,
    tenant_id: uuid.UUID | None = None,
) -> list[Claimed]:
    """Claim up to `limit` due deliveries of sending campaigns (oldest due first).

    Inside a `tenant_scope()`; or, with `tenant_id`, on a connection outside any transaction:
    the claim opens that scope itself (migration 0016) and is one round trip, its own
    transaction, instead of the scope's four (what the sender does for every claim)."""
    if limit <= 0:
        return []
    rows = await conn.fetch(
        "SELECT * FROM claim_deliveries($1, $2, $3, $4, $5)",
        tenant_id,
        owner,
        limit,
        lease,
        campaign_uid,
    )
    return [
        Claimed(
            id=row["id"],
            campaign_uid=row["campaign_uid"],
            attempts=row["attempts"],
            email=row["email"],
            fields=json.loads(row["fields"]) if row["fields"] is not None else {},
            suppressed=row["suppressed"],
            claims=row["claims"],
            expired_claims=row["expired_claims"],
            address_hash=bytes(row["address_hash"]),
            mailbox=row["mailbox"],
            previous_mailbox=row["previous_mailbox"],
        )
        for row in rows
    ]


async def record(conn: AnyConnection, outcomes: Sequence[Outcome], owner: str) -> int:
    """Write a batch of outcomes in one statement; returns how many were accepted.

    Only the lease owner's outcomes count: a row whose lease expired and that another sender
    claimed since belongs to that sender (its outcome will be written by it), so a late
    outcome from the first is ignored rather than overwriting the second's."""
    if not outcomes:
        return 0
    status = await conn.execute(
        """
        UPDATE deliveries d SET
            state = o.state,
            last_code = o.code,
            last_status = o.status,
            reason = o.reason,
            next_attempt_at = CASE WHEN o.retry_seconds IS NULL THEN d.next_attempt_at
                                   ELSE now() + make_interval(secs => o.retry_seconds) END,
            attempts = CASE WHEN o.count_attempt THEN d.attempts ELSE d.attempts - 1 END,
            sent_at = CASE WHEN o.state = 'sent' THEN now() ELSE d.sent_at END,
            mailbox = COALESCE(o.mailbox, d.mailbox),
            relay = COALESCE(o.relay, d.relay),
            lease_owner = NULL,
            lease_until = NULL,
            updated_at = now()
        FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[],
                    $6::float8[], $7::bool[], $9::text[], $10::text[])
            AS o(id, state, code, status, reason, retry_seconds, count_attempt, mailbox, relay)
        WHERE d.id = o.id AND d.state = 'sending' AND d.lease_owner = $8
        """,
        [o.id for o in outcomes],
        [o.state.value for o in outcomes],
        [o.code for o in outcomes],
        [o.status for o in outcomes],
        [o.reason[:500] if o.reason else None for o in outcomes],
        [o.retry_in.total_seconds() if o.retry_in is not None else None for o in outcomes],
        [o.count_attempt for o in outcomes],
        owner,
        [o.mailbox for o in outcomes],
        [o.relay for o in outcomes],
    )
    await add_blocks(conn, [o.block for o in outcomes if o.block is not None])
    bounced = [o.id for o in outcomes if o.state == DeliveryState.BOUNCED]
    if bounced:
        await suppress_deliveries(conn, bounced, "hard_bounce")
    return int(status.split()[-1])


async def suppress_deliveries(
    conn: AnyConnection, delivery_ids: Sequence[int], reason: str
) -> None:
    """Put the addresses of these deliveries on the suppression list (source: the campaign)."""
    await conn.execute(
        """
        INSERT INTO suppressions (address_hash, reason, source)
        SELECT DISTINCT ON (address_hash) address_hash, $2, 'campaign:' || campaign_uid::text
        FROM deliveries WHERE id = ANY($1::bigint[])
        ON CONFLICT (tenant_id, address_hash) DO NOTHING
        """,
        list(delivery_ids),
        reason,
    )


async def mark_bounced(
    conn: AnyConnection, delivery_id: int, status: str | None, reason: str | None
) -> bytes | None:
    """A late bounce (DSN) for a delivery a relay had accepted: `sent` -> `bounced` (also from
    `sending` or `deferred`: the DSN can overtake the sender's outcome batch, or answer an
    attempt whose result was unknown). Returns its address hash; None when the delivery was
    never handed over or is bounced already (a repeated DSN counts once)."""
    value = await conn.fetchval(
        """
        UPDATE deliveries SET state = 'bounced', last_status = $2, reason = $3,
               lease_owner = NULL, lease_until = NULL, updated_at = now()
        WHERE id = $1 AND state IN ('sent', 'sending', 'deferred') RETURNING address_hash
        """,
        delivery_id,
        status,
        reason,
    )
    return value if isinstance(value, bytes) else None


async def mark_unsubscribed(conn: AnyConnection, delivery_id: int) -> bytes | None:
    """Record the unsubscribe on the delivery; returns the address hash to suppress."""
    value = await conn.fetchval(
        """
        UPDATE deliveries SET unsubscribed_at = COALESCE(unsubscribed_at, now()), updated_at = now()
        WHERE id = $1 RETURNING address_hash
        """,
        delivery_id,
    )
    return value if isinstance(value, bytes) else None


async def mark_complained(conn: AnyConnection, delivery_id: int) -> bytes | None:
    value = await conn.fetchval(
        """
        UPDATE deliveries SET complained_at = COALESCE(complained_at, now()), updated_at = now()
        WHERE id = $1 RETURNING address_hash
        """,
        delivery_id,
    )
    return value if isinstance(value, bytes) else None


async def window_counts(conn: AnyConnection, uid: uuid.UUID, since: datetime) -> dict[str, int]:
    """For stop rules: messages done (accepted by the relay, or refused outright), hard bounces
    and complaints since `since`."""
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE sent_at >= $2
                                   OR (state = 'bounced' AND sent_at IS NULL
                                       AND updated_at >= $2)) AS done,
               count(*) FILTER (WHERE state = 'bounced' AND updated_at >= $2) AS bounced,
               count(*) FILTER (WHERE complained_at >= $2) AS complained
        FROM deliveries WHERE campaign_uid = $1
        """,
        uid,
        since,
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}


async def enforce_stop_rules(
    conn: AnyConnection,
    uid: uuid.UUID,
    rules: StopRules,
    unwritten: Mapping[str, int] | None = None,
) -> tuple[str | None, dict[str, int]]:
    """Check the stop rules over their window (plus outcomes a sender holds but has not
    written yet) and close the gate when one fires, so senders stop claiming at once rather
    than at the operator's next pass (which then shows the campaign Stopped). Returns the
    rule that fired (or None) and the window's counts from the database."""
    window = await window_counts(
        conn, uid, datetime.now(UTC) - timedelta(seconds=rules.window_seconds)
    )
    extra = unwritten or {}
    reason = rules.breached({key: value + extra.get(key, 0) for key, value in window.items()})
    if reason is not None:
        await set_sending(conn, uid, False)
    return reason, window


async def campaign_counts(conn: AnyConnection, uid: uuid.UUID) -> dict[str, int]:
    """Counts for Campaign.status.counts: one per state, plus unsubscribed and complained."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS total,
               count(*) FILTER (WHERE state IN ('queued', 'sending')) AS queued,
               count(*) FILTER (WHERE state = 'sent') AS sent,
               count(*) FILTER (WHERE state = 'deferred') AS deferred,
               count(*) FILTER (WHERE state = 'bounced') AS bounced,
               count(*) FILTER (WHERE state = 'failed') AS failed,
               count(*) FILTER (WHERE state = 'skipped') AS skipped,
               count(*) FILTER (WHERE unsubscribed_at IS NOT NULL) AS unsubscribed,
               count(*) FILTER (WHERE complained_at IS NOT NULL) AS complained
        FROM deliveries WHERE campaign_uid = $1
        """,
        uid,
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}


async def mailbox_counts(conn: AnyConnection, uid: uuid.UUID) -> dict[str, dict[str, int]]:
    """Per mailbox of a rotating campaign: its deliveries sent, and assigned but not final."""
    rows = await conn.fetch(
        """
        SELECT mailbox, count(*) FILTER (WHERE state = 'sent') AS sent,
               count(*) FILTER (WHERE state IN ('queued', 'sending', 'deferred')) AS queued
        FROM deliveries WHERE campaign_uid = $1 AND mailbox IS NOT NULL GROUP BY mailbox
        """,
        uid,
    )
    return {row["mailbox"]: {"sent": row["sent"], "queued": row["queued"]} for row in rows}


async def mailbox_first_sent(conn: AnyConnection, addresses: Sequence[str]) -> dict[str, datetime]:
    """When each mailbox sent its first message, in any campaign of the tenant: where its
    warm-up started (a mailbox that never sent is on day 0)."""
    rows = await conn.fetch(
        "SELECT mailbox, min(sent_at) AS first FROM deliveries "
        "WHERE mailbox = ANY($1::text[]) AND sent_at IS NOT NULL GROUP BY mailbox",
        list(addresses),
    )
    return {row["mailbox"]: row["first"] for row in rows}
