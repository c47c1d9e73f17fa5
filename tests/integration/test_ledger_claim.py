"""The claim in one round trip (migration 0016): `claim(..., tenant_id=T)` on a connection outside
any transaction opens T's scope itself, for that statement only, and a tenant's own login claims
only its own rows whatever tenant it names. Real PostgreSQL, the platform's and a tenant's login.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    Relay,
    claim,
    enqueue,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from penguinmails.common.db.tenants import upsert_tenant

pytestmark = pytest.mark.integration

KEY = b"claim-test-key"


async def tenant_with_rows(pool: asyncpg.Pool, prefix: str, count: int) -> uuid.UUID:
    """A tenant with a sending campaign of `count` due deliveries."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    tenant_id = await upsert_tenant(
        pool,
        name=name,
        tier="starter",
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )
    plan = CampaignPlan(
        from_address="jane@sender.example",
        subject="Hi",
        text="Hello",
        domain="sender.example",
        dkim_secret="d-dkim",
        unsubscribe_url="https://u.example/u",
        unsubscribe_mailto="unsubscribe@sender.example",
        postal_address="1 Way",
        relays=[Relay(name="sink", host="127.0.0.1", port=25, tls="none")],
    )
    uid = uuid.uuid4()
    csv = "email\n" + "".join(f"{prefix}{i}@dest.test\n" for i in range(count))
    async with tenant_connection(pool, tenant_id) as conn:
        await import_contacts(conn, "l", csv.encode(), KEY)
        await upsert_campaign(conn, uid=uid, namespace="ns", name="c", plan=plan)
        await enqueue(conn, uid, ["l"])
        await set_sending(conn, uid, True)
    return tenant_id


async def test_claim_scopes_itself_to_the_named_tenant_for_one_statement(
    db_pool: asyncpg.Pool, postgres_dsn: str
) -> None:
    first = await tenant_with_rows(db_pool, "ca", 5)
    second = await tenant_with_rows(db_pool, "cb", 3)
    lease = timedelta(minutes=5)
    async with db_pool.acquire() as conn:
        user = await conn.fetchval("SELECT current_user")
        # A batch in one statement, outside any transaction: only the named tenant's rows.
        batch = await claim(conn, "s1", 4, lease, tenant_id=first)
        assert len(batch) == 4 and not conn.is_in_transaction()
        assert {c.email for c in batch} <= {f"ca{i}@dest.test" for i in range(5)}
        assert all(c.claims == 1 and c.attempts == 1 for c in batch)
        # The scope ended with the statement: the connection is the platform's login again.
        assert await conn.fetchval("SELECT current_user") == user
        assert not await conn.fetchval("SELECT current_setting('penguinmails.tenant_id', true)")
        rest = await claim(conn, "s1", 10, lease, tenant_id=first)
        assert len(rest) == 1  # the fifth; the four claimed are leased
    async with tenant_connection(db_pool, second) as conn:
        # Inside a caller's scope, without naming a tenant: that scope's rows.
        scoped = await claim(conn, "s2", 10, lease)
        assert {c.email for c in scoped} == {f"cb{i}@dest.test" for i in range(3)}

    # A tenant's own login (what a sender holds) naming another tenant still claims only
    # its own rows: its login is its tenant (migration 0003), whatever it passes.
    third = await tenant_with_rows(db_pool, "cc", 2)
    other = await tenant_with_rows(db_pool, "cd", 2)
    password = new_password()
    role = await ensure_tenant_login(db_pool, third, password)
    own = await asyncpg.connect(with_login(postgres_dsn, role, password))
    try:
        mine = await claim(own, "s3", 10, lease, tenant_id=other)
        assert {c.email for c in mine} == {"cc0@dest.test", "cc1@dest.test"}
    finally:
        await own.close()
    async with tenant_connection(db_pool, other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE state = 'queued'") == 2
