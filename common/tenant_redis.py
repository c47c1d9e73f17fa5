"""Each tenant's own Redis user (Redis 7 ACLs), created and kept in shape by the operator.

The user may touch only keys under `tenant:<tenant id>:` (`tenant_key_prefix()`), with the
commands a sender needs: reads, writes and scripts on its keys, connection and transaction
commands. Refused besides what the key pattern already stops: everything `@admin` or
`@dangerous` (CONFIG, FLUSHALL, KEYS, ACL LIST, CLIENT LIST, ...), the commands that reveal
other keys without naming them (SCAN, RANDOMKEY, DBSIZE), Redis Functions (FUNCTION FLUSH would
reach beyond the tenant), and every Pub/Sub channel. Scripts run with the caller's rights
(Redis 7 checks each key a script touches), so EVAL gives no way out of the prefix.

Per-destination throttle buckets are therefore the tenant's own too (under its prefix): a key
shared by all tenants would be writable by every tenant, and Redis 7 has no way to let a user
reach a key only through a script. A tenant sends through its own relays and IPs, whose
reputation with each provider is what the bucket protects, so its own bucket is the right
scope anyway. See docs/operations.md.

The user is re-asserted (`ACL SETUSER ... reset`) on every call: after a Redis restart without
an ACL file, the operator's next reconcile brings every tenant's user back. The password is
sent as its SHA-256 (`#<hex>`), never in clear.
"""

from __future__ import annotations

import hashlib
import uuid

from redis.asyncio import Redis

__all__ = [
    "SENDER_ACL",
    "delete_tenant_redis_user",
    "ensure_tenant_redis_user",
    "tenant_key_prefix",
]

SENDER_ACL = (
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@connection",
    "+@transaction",
    "-@admin",
    "-@dangerous",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-function",
    "-script|flush",
    "-script|kill",
)
"""Command rules of a tenant's user, applied in order after `reset`."""


def tenant_key_prefix(tenant_id: uuid.UUID) -> str:
    """Where a tenant's keys live: its Redis ACL user may touch nothing else."""
    return f"tenant:{tenant_id}:"


async def ensure_tenant_redis_user(
    admin: Redis, username: str, tenant_id: uuid.UUID, password: str
) -> None:
    """Create or reset `username`: this password, this tenant's keys, the sender's commands."""
    digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
    # execute_command, not acl_setuser(): the rules go in exactly this order.
    await admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL",
        "SETUSER",
        username,
        "reset",
        "on",
        f"#{digest}",
        f"~{tenant_key_prefix(tenant_id)}*",
        "resetchannels",
        *SENDER_ACL,
    )


async def delete_tenant_redis_user(admin: Redis, username: str) -> None:
    await admin.execute_command("ACL", "DELUSER", username)  # type: ignore[no-untyped-call]
