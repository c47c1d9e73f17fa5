"""GDPR export and erasure against the real PostgreSQL.

Tenant A's data about one person is written the way production writes it: contacts imported by
the platform (the API's path), the ledger claimed and recorded with A's own login (the sender's
path), a campaign paused with a receiver's reply quoting the address, audit entries and a webhook
event naming it. Tenant B holds the same address. After A erases it, no text or JSON column of any
tenant table holds the address for A, A's suppression check still refuses it (a re-import does
not get it mailed), and B's data is untouched.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context, list_entries, record
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.gdpr import (
    ERASED,
    EXPORT_FORMAT,
    GdprError,
    erase_contact,
    export_contact,
)
from penguinmails.common.db.ledger import (
    CampaignPlan,
    DeliveryState,
    Outcome,
    Relay,
    claim,
    enqueue,
    pause_campaign,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.db.ledger import record as record_outcomes
from penguinmails.common.db.migrate import migrate
from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.suppression import address_hash, is_suppressed
from penguinmails.common.webhooks import EventType, create_endpoint, emit
from tests.integration.sender_support import tenant_row

pytestmark = pytest.mark.integration

KEY = b"gdpr-test-suppression-key-0123456789abcdef"
JANE = "jane.doe@example.com"
CSV = (
    b"email,first_name,referred_by\n"
    b"Jane.Doe@Example.com,Jane,\n"
    b"bob@example.org,Bob,jane.doe@example.com\n"
)
OPERATOR = Context("operator")
ADMIN = Context("user:admin", "198.51.100.7", "req_gdpr")
# The endpoint is never called here; it only has to pass the egress check (tests run on loopback).
LOOPBACK = EgressPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"),))


def plan() -> CampaignPlan:
    return CampaignPlan(
        from_address="sales@shop.example",
        subject="Hello",
        text="Hi {{ first_name }}",
        domain="shop.example",
        dkim_secret="shop-dkim",
        unsubscribe_url="https://u.example/u",
        unsubscribe_mailto="unsubscribe@shop.example",
        postal_address="1 Shop Road",
        relays=[Relay(name="relay", host="relay.shop.example", port=587)],
    )


async def new_tenant(pool: asyncpg.Pool, prefix: str) -> tuple[uuid.UUID, str]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    tenant_id = await tenant_row(pool, name)
    return tenant_id, f"tenant-{name}"


async def seed(pool: asyncpg.Pool, dsn: str, prefix: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A tenant holding JANE everywhere production puts an address; returns (tenant, campaign)."""
    tenant, namespace = await new_tenant(pool, prefix)
    uid = uuid.uuid4()
    async with tenant_connection(pool, tenant) as conn:  # the API and the operator
        for list_name in ("newsletter", "leads"):
            report = await import_contacts(conn, list_name, CSV, KEY)
            assert report.imported == 2, report.errors
        await upsert_campaign(conn, uid=uid, namespace=namespace, name="launch", plan=plan())
        assert await enqueue(conn, uid, ["newsletter", "leads"]) == 2
        await set_sending(conn, uid, True)
        await conn.execute(
            "INSERT INTO tenant_audit_events (kind, message) VALUES ('ContactImported', $1)",
            f"imported {JANE} into newsletter",
        )
        await record(conn, ADMIN, "contact.create", target="contact:1", details={"email": JANE})
        await create_endpoint(
            conn, ADMIN, "http://127.0.0.1:9/hook", [EventType.UNSUBSCRIBED], policy=LOOPBACK
        )
        assert await emit(conn, EventType.UNSUBSCRIBED, {"email": JANE, "campaign": str(uid)})

    # The sender, with the tenant's own login: claims both deliveries and records outcomes
    # whose replies quote the address (a deferral of Jane's, a reply on Bob's naming her).
    password = new_password()
    role = await ensure_tenant_login(pool, tenant, password)
    sender = await asyncpg.connect(with_login(dsn, role, password))
    try:
        async with sender.transaction():
            claimed = await claim(sender, "sender-1", 10, timedelta(minutes=5))
        by_email = {c.email.lower(): c for c in claimed if c.email}
        assert set(by_email) == {JANE, "bob@example.org"}
        outcomes = [
            Outcome(
                by_email[JANE].id,
                DeliveryState.DEFERRED,
                code=452,
                status="4.2.2",
                reason=f"452 4.2.2 <{JANE.upper()}>: mailbox full",
                retry_in=timedelta(hours=1),
            ),
            Outcome(
                by_email["bob@example.org"].id,
                DeliveryState.SENT,
                code=250,
                status="2.0.0",
                reason=f"250 2.0.0 ok (forwarded to {JANE})",
            ),
        ]
        async with sender.transaction():
            assert await record_outcomes(sender, outcomes, "sender-1") == 2
            await pause_campaign(sender, uid, f"receiver refused with 5.7.1 <{JANE}>: policy")
    finally:
        await sender.close()
    return tenant, uid


async def holders(pool: asyncpg.Pool, tenant: uuid.UUID, needle: str) -> dict[str, int]:
    """Every text, JSON or array column of every tenant-owned table, scanned (as the
    superuser, past row-level security) for rows of `tenant` that contain `needle`."""
    columns = await pool.fetch(
        """
        SELECT c.table_name, c.column_name FROM information_schema.columns c
        JOIN information_schema.columns t ON t.table_schema = c.table_schema
             AND t.table_name = c.table_name AND t.column_name = 'tenant_id'
        JOIN information_schema.tables tb ON tb.table_schema = c.table_schema
             AND tb.table_name = c.table_name AND tb.table_type = 'BASE TABLE'
        WHERE c.table_schema = current_schema()
          AND (c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'ARRAY', 'name',
                               'USER-DEFINED', 'inet'))
        ORDER BY 1, 2
        """
    )
    assert len(columns) >= 20, columns  # the scan really covers the schema
    found: dict[str, int] = {}
    for row in columns:
        table, column = row["table_name"], row["column_name"]
        count = await pool.fetchval(
            f'SELECT count(*) FROM "{table}" WHERE tenant_id = $1 '  # noqa: S608
            f'AND strpos(lower("{column}"::text), $2) > 0',
            tenant,
            needle,
        )
        if count:
            found[f"{table}.{column}"] = int(count)
    return found


async def test_export_lists_everything_and_erase_leaves_only_the_keyed_hash(
    db_pool: asyncpg.Pool, postgres_dsn: str
) -> None:
    a, a_campaign = await seed(db_pool, postgres_dsn, "gdpr-a")
    b, _ = await seed(db_pool, postgres_dsn, "gdpr-b")
    before_a = await holders(db_pool, a, JANE)
    before_b = await holders(db_pool, b, JANE)
    # Everywhere production writes the address (the scan is able to find it).
    assert set(before_a) == {
        "audit_log.details",
        "campaigns.pause_reason",
        "contacts.email",
        "contacts.fields",
        "deliveries.reason",
        "tenant_audit_events.message",
        "webhook_events.payload",
    }, before_a
    assert before_b == before_a

    async with tenant_connection(db_pool, a) as conn:
        document = await export_contact(conn, KEY, "  JANE.doe@example.COM ", ADMIN)
    json.dumps(document)  # machine-readable as it is
    assert document["format"] == EXPORT_FORMAT and document["email"] == JANE
    assert document["address_hash"] == address_hash(KEY, JANE).hex()
    assert sorted(c["list"]["name"] for c in document["contacts"]) == ["leads", "newsletter"]
    assert {c["fields"]["first_name"] for c in document["contacts"]} == {"Jane"}
    assert sorted(m["list_name"] for m in document["list_memberships"]) == ["leads", "newsletter"]
    [delivery] = document["deliveries"]
    assert delivery["state"] == "deferred" and delivery["last_code"] == 452
    assert JANE.upper() in delivery["reason"]
    assert delivery["campaign"]["uid"] == str(a_campaign)
    assert document["suppression"] == {
        "suppressed": False,
        "reason": None,
        "source": None,
        "since": None,
    }
    mentioned = sorted(m["table"] for m in document["mentions"])
    assert mentioned == [
        "audit_log",
        "campaigns.pause_reason",
        "contacts.fields",
        "contacts.fields",
        "deliveries",
        "tenant_audit_events",
        "webhook_events",
    ], mentioned
    assert all(JANE in m["text"].lower() for m in document["mentions"])

    hashed = address_hash(KEY, JANE)
    async with tenant_connection(db_pool, a) as conn:
        assert not await is_suppressed(conn, hashed)
        report = await erase_contact(conn, KEY, "Jane.Doe@Example.com", ADMIN)
    assert report.contacts_deleted == 2 and report.contact_fields_scrubbed == 2
    assert report.deliveries_scrubbed == 2 and report.campaigns_scrubbed == 1
    assert report.webhook_events_deleted == 1 and report.suppression_added
    # audit_log: the contact.create entry and the export's entry do not name it; the event does.
    assert report.audit_entries_scrubbed == 2

    assert await holders(db_pool, a, JANE) == {}
    assert await holders(db_pool, a, "jane.doe") == {}
    assert await holders(db_pool, b, JANE) == before_b  # the other tenant's identical address

    async with tenant_connection(db_pool, a) as conn:
        assert await is_suppressed(conn, hashed)
        suppression = await conn.fetchrow(
            "SELECT reason, source FROM suppressions WHERE address_hash = $1", hashed
        )
        assert suppression is not None and tuple(suppression) == ("manual", "gdpr-erasure")
        # What is left of the ledger: the row and its codes, not the reply.
        row = await conn.fetchrow(
            "SELECT contact_id, state, last_code, last_status, reason FROM deliveries "
            "WHERE address_hash = $1",
            hashed,
        )
        assert row is not None
        assert tuple(row) == (None, "deferred", 452, "4.2.2", ERASED)
        assert ERASED in await conn.fetchval(
            "SELECT pause_reason FROM campaigns WHERE uid = $1", a_campaign
        )
        # Imported again by mistake: the suppression list still refuses it.
        await import_contacts(conn, "newsletter", CSV, KEY)
        again = uuid.uuid4()
        await upsert_campaign(conn, uid=again, namespace="ns", name="again", plan=plan())
        assert await enqueue(conn, again, ["newsletter"]) == 1  # Bob only
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE campaign_uid = $1 AND address_hash = $2",
                again,
                hashed,
            )
            == 0
        )
        erased = await list_entries(conn, action="contact.erase")
        [entry] = erased.entries
        assert entry.target == f"address:{hashed.hex()}"
        assert entry.actor == "user:admin" and entry.request_id == "req_gdpr"
        assert entry.details["contacts_deleted"] == 2
        exported = await list_entries(conn, action="contact.export")
        assert [e.target for e in exported.entries] == [entry.target]

    async with tenant_connection(db_pool, b) as conn:
        assert not await is_suppressed(conn, hashed)
        assert (
            await conn.fetchval("SELECT count(*) FROM contacts WHERE lower(email) = $1", JANE) == 2
        )

    # Erasing again finds nothing more; a malformed address names the field.
    async with tenant_connection(db_pool, a) as conn:
        await conn.execute("DELETE FROM contacts WHERE address_hash = $1", hashed)
        second = await erase_contact(conn, KEY, JANE, ADMIN)
    assert second.contacts_deleted == 0 and not second.suppression_added
    with pytest.raises(GdprError) as caught:
        async with tenant_connection(db_pool, a) as conn:
            await erase_contact(conn, KEY, "not an address", ADMIN)
    assert caught.value.field == "email"


@pytest_asyncio.fixture(loop_scope="session")
async def platform_dsn(db_pool: asyncpg.Pool, postgres_dsn: str) -> AsyncIterator[str]:
    """A database owned by a platform login as production has it (LOGIN CREATEROLE, no
    superuser, no BYPASSRLS), migrated by that login; dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    login, database, password = f"pm_platform_{suffix}", f"pm_gdpr_{suffix}", new_password()
    await db_pool.execute(f"CREATE ROLE {login} LOGIN CREATEROLE PASSWORD '{password}'")
    await db_pool.execute(f"CREATE DATABASE {database} OWNER {login}")
    dsn = urlsplit(with_login(postgres_dsn, login, password))._replace(path=f"/{database}").geturl()
    try:
        assert await migrate(dsn)
        yield dsn
    finally:
        await db_pool.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await db_pool.execute(f"DROP ROLE IF EXISTS {login}")


async def test_erasure_as_the_production_platform_login(platform_dsn: str) -> None:
    """Row-level security binds the table owner here (no superuser): the audit scrub, a
    SECURITY DEFINER function of that owner, still reaches the tenant's rows, and only them."""
    pool = await asyncpg.create_pool(platform_dsn, min_size=1, max_size=2)
    try:
        assert not await pool.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        a, _ = await new_tenant(pool, "gdpr-prod-a")
        b, _ = await new_tenant(pool, "gdpr-prod-b")
        for tenant in (a, b):
            async with tenant_connection(pool, tenant) as conn:
                await import_contacts(conn, "newsletter", CSV, KEY)
                await record(conn, ADMIN, "contact.create", details={"email": JANE})
        async with tenant_connection(pool, a) as conn:
            report = await erase_contact(conn, KEY, JANE, ADMIN)
            assert report.contacts_deleted == 1 and report.audit_entries_scrubbed == 1
            details = await conn.fetch("SELECT details::text AS d FROM audit_log")
            assert all(JANE not in row["d"] for row in details) and len(details) == 2
        async with tenant_connection(pool, b) as conn:
            details = await conn.fetch("SELECT details::text AS d FROM audit_log")
            assert [JANE in row["d"] for row in details] == [True]
    finally:
        await pool.close()
