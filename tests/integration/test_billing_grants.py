"""The billing code's own login (penguinmails_billing, migration 0011): its tables, nothing else.

The API's billing code runs on PM_BILLING_DATABASE_URL; the chart names a Secret with a member
of penguinmails_billing. Here such a login (`billing_login()`) is refused every tenant table,
the accounts, the webhooks and the operator's billing tables with PostgreSQL's own "permission
denied", and the billing code still does its work on it: plans, the webhook's event log and
the grace expiry (the whole webhook life cycle runs on it in test_billing_webhook.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from penguinmails.api.billing.plans import Plan, get_plan, list_plans, put_plan
from penguinmails.api.billing.tenants import TenantWriter
from penguinmails.api.billing.webhook import expire_grace
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.devstack.stack import api_client_for
from tests.integration.billing_support import (
    Events,
    WebhookServer,
    billing_database_url,
    stripe_settings,
)
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration
__all__ = ["billing_database_url"]  # a fixture, used by name

REFUSED = (
    "SELECT * FROM contacts",
    "SELECT * FROM deliveries",
    "SELECT * FROM contact_lists",
    "SELECT * FROM campaigns",
    "SELECT * FROM tenants",
    "SELECT * FROM users",
    "SELECT * FROM api_keys",
    "SELECT * FROM webhook_endpoints",
    "SELECT * FROM audit_log",
    "SELECT * FROM billing_usage_reports",
    "SELECT * FROM billing_notices",
    "UPDATE deliveries SET state = 'sent'",
    "DELETE FROM contacts",
    "DELETE FROM billing_events",
    "DELETE FROM billing_plans",
    "SET ROLE penguinmails_app",
    "SET ROLE penguinmails_platform",
)


@pytest_asyncio.fixture(loop_scope="session")
async def billing_conn(billing_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(billing_database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_billing_login_cannot_read_contacts_deliveries_or_other_data(
    billing_conn: asyncpg.Connection,
) -> None:
    refused = []
    for statement in REFUSED:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied") as info:
            await billing_conn.execute(statement)
        refused.append(f"{statement}: {info.value}")
    print("refused to the billing login:\n  " + "\n  ".join(refused))
    assert len(refused) == len(REFUSED)
    member_of = await billing_conn.fetch(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
        "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    )
    assert [r["rolname"] for r in member_of] == ["penguinmails_billing"]
    assert not await billing_conn.fetchval(
        "SELECT rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb FROM pg_roles "
        "WHERE rolname = current_user"
    )


@pytest.fixture
def webhook_on_billing_login(
    cluster: Cluster,
    crds_installed: list[str],
    billing_database_url: str,
) -> Iterator[WebhookServer]:
    server = WebhookServer(billing_database_url, cluster.kubeconfig, stripe_settings("http://x"))
    yield server.start()
    server.stop()


async def test_the_billing_code_works_on_its_login(
    billing_database_url: str,
    db_pool: asyncpg.Pool,
    cluster: Cluster,
    webhook_on_billing_login: WebhookServer,
) -> None:
    """Plans written and read, an event recorded once and its redelivery answered duplicate,
    and the grace expiry's scan: all on the narrow login."""
    pool = await asyncpg.create_pool(billing_database_url, min_size=1, max_size=2)
    try:
        plan = Plan(Tier.ENTERPRISE, "price_grantsEntM", None, 9_000_000, True)
        await put_plan(pool, plan)
        assert await get_plan(pool, Tier.ENTERPRISE) == plan
        assert plan in await list_plans(pool)
        tenants = TenantWriter(api_client_for(cluster.kubeconfig))
        assert await expire_grace(pool, tenants, stripe_settings("http://x")) == []
    finally:
        await pool.close()
        await db_pool.execute("DELETE FROM billing_plans WHERE tier = 'enterprise'")
    event = Events(start=1_700_000_000, prefix="grants").make(
        "customer.created", {"id": "cus_grants", "object": "customer"}
    )
    first = webhook_on_billing_login.deliver(event)
    again = webhook_on_billing_login.deliver(event)
    print(f"verdicts on the billing login: {dict(webhook_on_billing_login.tally)}")
    assert (first.status_code, first.json()["verdict"]) == (200, "ignored")
    assert (again.status_code, again.json()["verdict"]) == (200, "duplicate")
    outcome = await db_pool.fetchval(
        "SELECT outcome FROM billing_events WHERE event_id = $1", event["id"]
    )
    assert outcome.startswith("ignored")
