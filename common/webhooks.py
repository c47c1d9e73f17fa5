"""Outbound webhooks: endpoints per tenant, events signed per the Standard Webhooks spec,
delivered with retries and exponential backoff, a delivery log, manual redelivery.

    endpoint, secret = await create_endpoint(conn, context, "https://example.com/hook",
                                             [EventType.BOUNCED], policy=EgressPolicy.from_env())
    await emit(conn, EventType.BOUNCED, {"email": ..., "campaign": ...})   # in the tenant scope

Posting them is `common.webhook_dispatch`'s work (the dispatcher process).

**Signing** (https://www.standardwebhooks.com): each request carries `webhook-id` (the event's
id, the same on every attempt and endpoint, for de-duplication), `webhook-timestamp` (Unix
seconds of this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
`<id>.<timestamp>.<body>`, keyed with the base64-decoded part of the endpoint's `whsec_...`
secret. Receivers verify with any Standard Webhooks library (the tests use `standardwebhooks`).

**Events.** `emit()` stores the event once and one delivery per enabled endpoint subscribed to
its type (nothing at all when none is: no personal data kept for nobody), and notifies the
dispatchers (`CHANNEL`). `redeliver()` sends one again; `delivery_log()` reads the attempts.

**Egress.** Endpoint URLs are tenant input: the host is checked with `common.egress`
(`EgressPolicy`) when the endpoint is created and again before every attempt, so a tenant can
make the platform post neither to the cluster nor to private networks (`PM_EGRESS_ALLOW` opens a
network explicitly; the tests allow loopback).

Only the platform (`penguinmails_app`, in a tenant scope) touches these tables; tenants' own
logins have no grant on them. The secret never appears in a log or an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from penguinmails.common.db import AnyConnection
from penguinmails.common.db.audit import Context, record
from penguinmails.common.egress import EgressPolicy

__all__ = [
    "CHANNEL",
    "ROTATION_GRACE",
    "SECRET_PREFIX",
    "Attempt",
    "Delivery",
    "Endpoint",
    "EventType",
    "WebhookError",
    "check_destination",
    "create_endpoint",
    "delete_endpoint",
    "delivery_log",
    "emit",
    "list_deliveries",
    "list_endpoints",
    "new_secret",
    "redeliver",
    "rotate_secret",
    "sign",
    "signed_headers",
    "update_endpoint",
]

SECRET_PREFIX = "whsec_"  # noqa: S105  (the spec's prefix, no secret)
USER_AGENT = "PenguinMails-Webhooks/1"
ROTATION_GRACE = timedelta(hours=24)
"""How long a rotated-out secret keeps signing beside the new one."""
CHANNEL = "penguinmails_webhooks"
"""NOTIFY channel: the payload is the id of a tenant with a delivery due now."""


class EventType(StrEnum):
    DELIVERED = "delivery.delivered"
    BOUNCED = "delivery.bounced"
    COMPLAINED = "delivery.complained"
    UNSUBSCRIBED = "delivery.unsubscribed"
    REPLIED = "delivery.replied"
    CAMPAIGN_STATE_CHANGED = "campaign.state_changed"
    USAGE_THRESHOLD = "usage.threshold"


class WebhookError(ValueError):
    """Bad input, naming the field and the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def new_secret() -> str:
    """`whsec_` and 32 random bytes in base64 (the spec asks for 24 to 64 bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = message_id.encode("ascii") + b"." + str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secret: str, message_id: str, timestamp: int, body: bytes, *, previous: str | None = None
) -> dict[str, str]:
    """The request headers; with `previous` (a rotated-out secret still within its grace
    period) a second signature follows, space-separated, as the spec provides for rotation."""
    signatures = [sign(secret, message_id, timestamp, body)]
    if previous is not None:
        signatures.append(sign(previous, message_id, timestamp, body))
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as shown to its tenant: everything but the secret."""

    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    created_at: datetime


@dataclass(frozen=True)
class Attempt:
    """One line of the delivery log."""

    delivery_id: int
    event_id: str
    event_type: str
    endpoint_id: uuid.UUID
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: int
    response: str | None
    error: str | None
    state: str
    """The delivery's state now: pending, succeeded or failed."""


def _check_url(url: str) -> str:
    def bad(why: str) -> WebhookError:
        return WebhookError("url", f"{why}, e.g. https://example.com/webhooks")

    if len(url) > 2048:
        raise bad("is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise bad("is not a URL") from None
    if parts.scheme not in ("https", "http"):
        raise bad("must be an http or https URL")
    if not parts.hostname:
        raise bad("has no host")
    if parts.username is not None or parts.password is not None:
        raise bad("must not carry credentials (verify the signature instead)")
    if parts.fragment:
        raise bad("must not have a #fragment")
    return url


def _check_event_types(event_types: Sequence[str]) -> list[str]:
    known = {e.value for e in EventType}
    unknown = [e for e in event_types if e not in known]
    if unknown or not event_types:
        raise WebhookError(
            "event_types",
            f"{', '.join(unknown) or 'empty'}: choose one or more of {', '.join(sorted(known))}",
        )
    return sorted(set(event_types))


async def check_destination(policy: EgressPolicy, url: str) -> list[str]:
    """The addresses of the URL's host, all allowed; else `DestinationNotAllowedError`."""
    return await policy.check("url", urlsplit(url).hostname or "")


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row["id"],
        url=row["url"],
        event_types=list(row["event_types"]),
        description=row["description"],
        enabled=row["enabled"],
        created_at=row["created_at"],
    )


async def create_endpoint(
    conn: AnyConnection,
    context: Context,
    url: str,
    event_types: Sequence[str],
    *,
    policy: EgressPolicy,
    description: str | None = None,
) -> tuple[Endpoint, str]:
    """Create an endpoint for the current tenant; returns it and its secret (show it once).
    Raises `WebhookError` naming the field, or `DestinationNotAllowedError` (field `url`)."""
    _check_url(url)
    types = _check_event_types(event_types)
    if description is not None and len(description) > 500:
        raise WebhookError("description", "must be at most 500 characters")
    await check_destination(policy, url)
    secret = new_secret()
    row = await conn.fetchrow(
        "INSERT INTO webhook_endpoints (url, secret, event_types, description) "
        "VALUES ($1, $2, $3, $4) "
        "RETURNING id, url, event_types, description, enabled, created_at",
        url,
        secret,
        types,
        description,
    )
    assert row is not None
    endpoint = _endpoint(row)
    await record(
        conn,
        context,
        "webhook_endpoint.create",
        target=f"webhook_endpoint:{endpoint.id}",
        details={"url": url, "event_types": types},
    )
    return endpoint, secret


async def update_endpoint(
    conn: AnyConnection,
    context: Context,
    endpoint_id: uuid.UUID,
    *,
    policy: EgressPolicy,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> Endpoint | None:
    """Change the given fields (None: unchanged); None when the tenant has no such endpoint."""
    if url is not None:
        _check_url(url)
        await check_destination(policy, url)
    types = _check_event_types(event_types) if event_types is not None else None
    if description is not None and len(description) > 500:
        raise WebhookError("description", "must be at most 500 characters")
    row = await conn.fetchrow(
        """
        UPDATE webhook_endpoints SET url = COALESCE($2, url),
            event_types = COALESCE($3, event_types), description = COALESCE($4, description),
            enabled = COALESCE($5, enabled)
        WHERE id = $1 RETURNING id, url, event_types, description, enabled, created_at
        """,
        endpoint_id,
        url,
        types,
        description,
        enabled,
    )
    if row is None:
        return None
    changed = {
        k: v
        for k, v in {"url": url, "event_types": types, "enabled": enabled}.items()
        if v is not None
    }
    if description is not None:
        changed["description"] = True
    await record(
        conn,
        context,
        "webhook_endpoint.update",
        target=f"webhook_endpoint:{endpoint_id}",
        details=changed,
    )
    return _endpoint(row)


async def rotate_secret(
    conn: AnyConnection, context: Context, endpoint_id: uuid.UUID
) -> str | None:
    """A new secret for the endpoint (returned, show it once); the old one keeps signing as a
    second signature for `ROTATION_GRACE`. None when the tenant has no such endpoint."""
    secret = new_secret()
    rotated = await conn.fetchval(
        "UPDATE webhook_endpoints SET previous_secret = secret, "
        "previous_until = now() + $3::interval, secret = $2 WHERE id = $1 RETURNING true",
        endpoint_id,
        secret,
        ROTATION_GRACE,
    )
    if not rotated:
        return None
    await record(
        conn, context, "webhook_endpoint.rotate_secret", target=f"webhook_endpoint:{endpoint_id}"
    )
    return secret


async def list_endpoints(conn: AnyConnection) -> list[Endpoint]:
    rows = await conn.fetch(
        "SELECT id, url, event_types, description, enabled, created_at FROM webhook_endpoints "
        "ORDER BY created_at, id"
    )
    return [_endpoint(row) for row in rows]


async def delete_endpoint(conn: AnyConnection, context: Context, endpoint_id: uuid.UUID) -> bool:
    """Delete an endpoint and its deliveries and log; False when the tenant has no such one."""
    gone = await conn.fetchval(
        "DELETE FROM webhook_endpoints WHERE id = $1 RETURNING true", endpoint_id
    )
    if gone:
        await record(
            conn, context, "webhook_endpoint.delete", target=f"webhook_endpoint:{endpoint_id}"
        )
    return bool(gone)


async def emit(conn: AnyConnection, event_type: EventType, data: dict[str, Any]) -> str | None:
    """Queue an event for every enabled endpoint of the current tenant subscribed to its type;
    returns the event id (`msg_...`), or None when no endpoint wants it (nothing is stored)."""
    event_id = f"msg_{uuid.uuid4().hex}"
    payload = {
        "type": event_type.value,
        "timestamp": datetime.now(UTC).isoformat(),
        "data": data,
    }
    created = await conn.fetchval(
        """
        WITH endpoints AS (
            SELECT id FROM webhook_endpoints WHERE enabled AND $2 = ANY(event_types)
        ), event AS (
            INSERT INTO webhook_events (id, event_type, payload)
            SELECT $1, $2, $3::jsonb WHERE EXISTS (SELECT FROM endpoints)
            RETURNING id
        ), deliveries AS (
            INSERT INTO webhook_deliveries (event_id, endpoint_id)
            SELECT event.id, endpoints.id FROM event, endpoints
            RETURNING 1
        )
        SELECT count(*) FROM deliveries
        """,
        event_id,
        event_type.value,
        json.dumps(payload, sort_keys=True),
    )
    if not created:
        return None
    await _notify(conn)
    return event_id


async def _notify(conn: AnyConnection) -> None:
    """Tell dispatchers this tenant has a delivery due (delivered when the transaction
    commits, dropped if it rolls back)."""
    await conn.execute("SELECT pg_notify($1, current_tenant_id()::text)", CHANNEL)


async def redeliver(conn: AnyConnection, context: Context, delivery_id: int) -> bool:
    """Send a delivery again now. A finished one (succeeded or failed) gets one more attempt
    outside the retry schedule; a pending one is simply moved to now. False when unknown."""
    row = await conn.fetchrow(
        """
        UPDATE webhook_deliveries
        SET manual = state <> 'pending', state = 'pending', next_attempt_at = now(),
            updated_at = now()
        WHERE id = $1 RETURNING event_id, endpoint_id
        """,
        delivery_id,
    )
    if row is None:
        return False
    await _notify(conn)
    await record(
        conn,
        context,
        "webhook_delivery.redeliver",
        target=f"webhook_delivery:{delivery_id}",
        details={"event_id": row["event_id"], "endpoint_id": str(row["endpoint_id"])},
    )
    return True


async def delivery_log(
    conn: AnyConnection,
    *,
    endpoint_id: uuid.UUID | None = None,
    event_id: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> list[Attempt]:
    """Attempts of the current tenant, newest first (`before`: an attempt id, for paging)."""
    if not 1 <= limit <= 100:
        raise WebhookError("limit", "must be between 1 and 100")
    rows = await conn.fetch(
        """
        SELECT a.id, a.delivery_id, d.event_id, e.event_type, d.endpoint_id, a.attempt, a.at,
               a.status_code, a.latency_ms, a.response, a.error, d.state
        FROM webhook_attempts a
        JOIN webhook_deliveries d ON d.id = a.delivery_id
        JOIN webhook_events e ON e.id = d.event_id
        WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
          AND ($2::text IS NULL OR d.event_id = $2)
          AND ($3::bigint IS NULL OR a.id < $3)
        ORDER BY a.id DESC LIMIT $4
        """,
        endpoint_id,
        event_id,
        before,
        limit,
    )
    return [
        Attempt(
            delivery_id=row["delivery_id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            endpoint_id=row["endpoint_id"],
            attempt=row["attempt"],
            at=row["at"],
            status_code=row["status_code"],
            latency_ms=row["latency_ms"],
            response=row["response"],
            error=row["error"],
            state=row["state"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Delivery:
    """One event sent (or to be sent) to one endpoint, with its attempts, oldest first."""

    id: int
    event_id: str
    event_type: str
    state: str
    next_attempt_at: datetime
    created_at: datetime
    attempts: list[dict[str, Any]]
    """`attempt`, `at`, `statusCode`, `latencyMs`, `response`, `error` of each attempt."""


async def list_deliveries(
    conn: AnyConnection, endpoint_id: uuid.UUID, *, limit: int = 20, before: int | None = None
) -> list[Delivery]:
    """The endpoint's deliveries of the current tenant, newest first (`before`: a delivery id,
    for paging), each with its attempts (also those not made yet: none for a new delivery)."""
    if not 1 <= limit <= 101:
        raise WebhookError("limit", "must be between 1 and 100")
    rows = await conn.fetch(
        """
        SELECT d.id, d.event_id, e.event_type, d.state, d.next_attempt_at, e.created_at,
               COALESCE((
                   SELECT json_agg(json_build_object(
                       'attempt', a.attempt, 'at', a.at, 'statusCode', a.status_code,
                       'latencyMs', a.latency_ms, 'response', a.response, 'error', a.error)
                       ORDER BY a.id)
                   FROM webhook_attempts a WHERE a.delivery_id = d.id
               ), '[]') AS attempts
        FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
        WHERE d.endpoint_id = $1 AND ($2::bigint IS NULL OR d.id < $2)
        ORDER BY d.id DESC LIMIT $3
        """,
        endpoint_id,
        before,
        limit,
    )
    return [
        Delivery(
            id=row["id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            state=row["state"],
            next_attempt_at=row["next_attempt_at"],
            created_at=row["created_at"],
            attempts=json.loads(row["attempts"]),
        )
        for row in rows
    ]
