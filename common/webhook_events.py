"""The events producers emit, built in one place so every producer sends the same payload.

    async with tenant_connection(pool, tenant_id) as conn:      # a platform login
        await delivery_event(conn, EventType.BOUNCED, delivery_id, status="5.1.1")
        await campaign_state_changed(conn, campaign_uid, "Paused", previous="Sending")

Each runs inside the caller's transaction (the event is stored, and dispatchers notified, only
if the write that caused it commits) and costs one query plus `emit()`'s, which stores nothing
when no endpoint of the tenant subscribes to the type. Only platform logins can emit (tenants'
own logins have no grant on the webhook tables): the intake, the unsubscribe endpoint and the
operator, not the sender (see docs/data-protection.md for `delivery.delivered`).

Payloads name the recipient by the contact's address when the contact still exists (the
customer's own data; events are deleted with the history after 30 days, and by an erasure).
"""

from __future__ import annotations

from typing import Any

from penguinmails.common.db import AnyConnection
from penguinmails.common.webhooks import EventType, emit

__all__ = ["campaign_state_changed", "delivery_event", "unsubscribed_before"]


async def delivery_event(
    conn: AnyConnection, event_type: EventType, delivery_id: int, **extra: Any
) -> str | None:
    """Emit `event_type` for one delivery: `deliveryId`, `campaign` (its name), `email` (None
    once the contact is gone), and `extra` (e.g. `status`). Returns the event id, if stored."""
    row = await conn.fetchrow(
        """
        SELECT d.id, c.name AS campaign, ct.email
        FROM deliveries d
        LEFT JOIN campaigns c ON c.uid = d.campaign_uid
        LEFT JOIN contacts ct ON ct.id = d.contact_id
        WHERE d.id = $1
        """,
        delivery_id,
    )
    if row is None:
        return None
    data = {"deliveryId": row["id"], "campaign": row["campaign"], "email": row["email"], **extra}
    return await emit(conn, event_type, data)


async def campaign_state_changed(
    conn: AnyConnection, namespace: str, name: str, phase: str, previous: str | None
) -> str | None:
    """Emit `campaign.state_changed`: `campaign`, `phase` and `previousPhase`."""
    data = {"campaign": name, "namespace": namespace, "phase": phase, "previousPhase": previous}
    return await emit(conn, EventType.CAMPAIGN_STATE_CHANGED, data)


async def unsubscribed_before(conn: AnyConnection, delivery_id: int) -> bool:
    """Whether the delivery was unsubscribed already: read before marking it, so that a repeated
    click or mailto sends `delivery.unsubscribed` once, not each time."""
    return bool(
        await conn.fetchval(
            "SELECT unsubscribed_at IS NOT NULL FROM deliveries WHERE id = $1", delivery_id
        )
    )
