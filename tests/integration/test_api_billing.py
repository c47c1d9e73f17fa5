"""Billing through the customer API, against stripe-mock: the API runs as its own process with
billing on (PM_STRIPE_*), the chart's RBAC rendered with `billing.stripe.secretName` (get and
patch on Tenants), and the billing tables on billing's own narrow login (PM_BILLING_DATABASE_URL,
a member of penguinmails_billing only).

Roles: viewers read (usage, invoices), admins and owners change (checkout, portal, plan,
cancel); API keys get nothing; another tenant's users and keys get 404 on every endpoint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.api.billing.plans import Plan, put_plan
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.common.db.accounts import Role
from penguinmails.devstack.stripe_mock import StripeMock
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_key,
    api_kubeconfig,
    api_server,
    chart_api_identity,
    make_tenant,
    make_user,
    sign_in,
    start_api,
    stop_api,
)
from tests.integration.billing_support import (
    WEBHOOK_SECRET,
    billing_database_url,
    checkout_session,
    sign,
)
from tests.integration.conftest import GROUP, VERSION, Cluster

pytestmark = pytest.mark.integration

__all__ = [  # fixtures used by name
    "api_database_url",
    "api_kubeconfig",
    "api_server",
    "billing_database_url",
]

STARTER = Plan(Tier.STARTER, "price_apiStarterM", "price_apiStarterY", 10_000, False)
BUSINESS = Plan(Tier.BUSINESS, "price_apiBusinessM", None, 500_000, True)
SENT = 2_500


@pytest.fixture(scope="module")
def billing_kubeconfig(
    cluster: Cluster, api_client: client.ApiClient, core: client.CoreV1Api, crds_installed: Any
) -> Iterator[Path]:
    with chart_api_identity(
        cluster, api_client, core, "billing.stripe.secretName=penguinmails-stripe"
    ) as kubeconfig:
        yield kubeconfig


@pytest.fixture(scope="module")
def billing_api(
    billing_kubeconfig: Path,
    api_database_url: str,
    billing_database_url: str,
    redis_url: str,
    stripe_mock: StripeMock,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    process, server = start_api(
        tmp_path_factory.mktemp("api-billing"),
        database_url=api_database_url,
        redis_url=redis_url,
        kubeconfig=billing_kubeconfig,
        PM_STRIPE_API_KEY="sk_test_apibilling",
        PM_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        PM_STRIPE_API_BASE=stripe_mock.url,
        PM_BILLING_DATABASE_URL=billing_database_url,
    )
    yield server
    stop_api(process)
    text = server.log()
    assert "Traceback" not in text, text[-4000:]
    assert "sk_test_apibilling" not in text and WEBHOOK_SECRET not in text


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def plans(db_pool: asyncpg.Pool) -> AsyncIterator[None]:
    await put_plan(db_pool, STARTER)
    await put_plan(db_pool, BUSINESS)
    yield
    await db_pool.execute("DELETE FROM billing_plans WHERE tier IN ('starter', 'business')")


@dataclass(frozen=True)
class Account:
    tenant: TenantSetup
    owner: str
    viewer: str
    key: str


def _tenant_resource(
    api_client: client.ApiClient, name: str, billing: dict[str, str] | None
) -> None:
    """The Tenant as the operator and billing leave it: spec, and the month's count in status."""
    objects = client.CustomObjectsApi(api_client)
    spec: dict[str, Any] = {"tier": "starter", "contactEmail": f"ops@{name}.example.com"}
    if billing:
        spec["billing"] = billing
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name}}
    objects.create_cluster_custom_object(GROUP, VERSION, "tenants", {**body, "spec": spec})
    objects.patch_cluster_custom_object_status(
        GROUP, VERSION, "tenants", name, {"status": {"emailsSentThisMonth": SENT}}
    )


async def _account(
    billing_api: ApiServer,
    db_pool: asyncpg.Pool,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    prefix: str,
    billing: dict[str, str] | None,
) -> Account:
    tenant = await make_tenant(db_pool, core, prefix)
    _tenant_resource(api_client, tenant.name, billing)
    owner = (await sign_in(billing_api, await make_user(db_pool, tenant, Role.OWNER)))[
        "accessToken"
    ]
    viewer = (await sign_in(billing_api, await make_user(db_pool, tenant, Role.VIEWER)))[
        "accessToken"
    ]
    key = await api_key(billing_api, owner, tenant, ["domains:write"])
    return Account(tenant, owner, viewer, key)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def paying(
    billing_api: ApiServer,
    db_pool: asyncpg.Pool,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    plans: None,
) -> Account:
    billing = {"stripeCustomerId": "cus_apiPaying", "stripeSubscriptionId": "sub_apiPaying"}
    return await _account(billing_api, db_pool, core, api_client, "paying", billing)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fresh(
    billing_api: ApiServer,
    db_pool: asyncpg.Pool,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    plans: None,
) -> Account:
    return await _account(billing_api, db_pool, core, api_client, "fresh", None)


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"type", "code", "message", "param"}
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.mark.asyncio(loop_scope="session")
async def test_owner_subscribes_changes_and_cancels_viewer_reads(
    billing_api: ApiServer, paying: Account, fresh: Account
) -> None:
    base = f"/v1/tenants/{fresh.tenant.name}/billing"
    async with billing_api.client(fresh.owner) as http:
        listed = (await http.get("/v1/billing/plans")).json()
        assert [(p["tier"], p["yearly"]) for p in listed] == [
            ("starter", True),
            ("business", False),
        ]
        started = await http.post(base + "/checkout", json={"plan": "business"})
        assert started.status_code == 200, started.text
        assert started.json()["url"].startswith("https://checkout.stripe.com/")
        yearly = await http.post(
            base + "/checkout", json={"plan": "business", "interval": "yearly"}
        )
        assert _error(yearly, 400)["param"] == "interval"
        unsold = await http.post(base + "/checkout", json={"plan": "enterprise"})
        assert _error(unsold, 400)["param"] == "plan"
        # Nothing to manage before the first Checkout: said so, with what to do.
        for action in ("/portal", "/cancel"):
            assert (
                "checkout"
                in _error(await http.post(base + action), 409, "no_subscription")["message"]
            )
        assert (await http.get(base + "/invoices")).json() == {"data": []}

    base = f"/v1/tenants/{paying.tenant.name}/billing"
    async with billing_api.client(paying.owner) as http:
        _error(
            await http.post(base + "/checkout", json={"plan": "starter"}), 409, "already_subscribed"
        )
        portal = await http.post(base + "/portal")
        assert portal.status_code == 200, portal.text
        assert portal.json()["url"].startswith("https://")
        changed = await http.post(
            base + "/plan", json={"plan": "business"}, headers={"Idempotency-Key": "chg-1"}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json() == {"status": "active"}
        cancelled = await http.post(base + "/cancel")
        assert cancelled.json() == {"cancelAtPeriodEnd": True}, cancelled.text

    async with billing_api.client(paying.viewer) as http:
        usage = (await http.get(base + "/usage")).json()
        assert usage["emailsSent"] == SENT and usage["tier"] == "starter"
        assert usage["emailsPerMonth"] == STARTER.emails_per_month
        assert usage["percentUsed"] == 100 * SENT / STARTER.emails_per_month
        assert usage["overageAllowed"] is False
        invoices = (await http.get(base + "/invoices")).json()["data"]
        print(f"invoices through the API: {[(i['id'], i['amountDue']) for i in invoices]}")
        assert invoices and all(i["id"].startswith("in_") for i in invoices)
        for action in ("/portal", "/cancel"):
            _error(await http.post(base + action), 403, "insufficient_permissions")
        _error(await http.post(base + "/plan", json={"plan": "business"}), 403)

    # An API key neither spends money nor reads invoices, whatever its scopes.
    async with billing_api.client(paying.key) as http:
        for path in ("/usage", "/invoices"):
            assert "sign in" in _error(await http.get(base + path), 403)["message"]
        _error(await http.post(base + "/portal"), 403)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_suspended_tenant_can_still_pay(
    billing_api: ApiServer, paying: Account, db_pool: asyncpg.Pool
) -> None:
    await db_pool.execute("UPDATE tenants SET suspended = true WHERE id = $1", paying.tenant.id)
    try:
        async with billing_api.client(paying.owner) as http:
            portal = await http.post(f"/v1/tenants/{paying.tenant.name}/billing/portal")
            assert portal.status_code == 200, portal.text
            domain = {
                "name": "d",
                "spec": {"domain": "d.example.com", "dnsProvider": {"type": "manual"}},
            }
            refused = await http.post(
                f"/v1/tenants/{paying.tenant.name}/sending-domains", json=domain
            )
            _error(refused, 403, "tenant_suspended")
    finally:
        await db_pool.execute(
            "UPDATE tenants SET suspended = false WHERE id = $1", paying.tenant.id
        )


@pytest.mark.asyncio(loop_scope="session")
async def test_another_tenant_cannot_see_or_touch_billing(
    billing_api: ApiServer, paying: Account, fresh: Account
) -> None:
    """`fresh`'s owner, viewer and API key against every billing endpoint of `paying`."""
    base = f"/v1/tenants/{paying.tenant.name}/billing"
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/checkout", {"plan": "starter"}),
        ("POST", "/portal", None),
        ("POST", "/plan", {"plan": "business"}),
        ("POST", "/cancel", None),
        ("GET", "/invoices", None),
        ("GET", "/usage", None),
    ]
    probes = 0
    for token in (fresh.owner, fresh.viewer, fresh.key):
        async with billing_api.client(token) as http:
            for method, path, body in calls:
                response = await http.request(method, base + path, json=body)
                error = _error(response, 404, "resource_missing")
                assert error["param"] == "tenant"
                assert "cus_" not in response.text and "in_" not in json.dumps(error)
                probes += 1
    print(f"cross-tenant billing probes: {probes}, all 404")
    assert probes == 3 * len(calls)


@pytest.mark.asyncio(loop_scope="session")
async def test_the_api_serves_stripes_webhook(
    billing_api: ApiServer, fresh: Account, api_client: client.ApiClient
) -> None:
    """Mounted by the API with billing on, changing the Tenant with the chart's RBAC."""
    event = {
        "id": f"evt_api{fresh.tenant.name.replace('-', '')}",
        "object": "event",
        "type": "checkout.session.completed",
        "created": 1_700_000_000,
        "livemode": False,
        "api_version": "2025-03-31.basil",
        "data": {"object": checkout_session(fresh.tenant.name, "cus_apiFresh", "sub_apiFresh")},
    }
    payload = json.dumps(event).encode()
    async with billing_api.client() as http:
        forged = await http.post(
            "/v1/billing/webhook",
            content=payload,
            headers={"Stripe-Signature": sign(payload, "whsec_forged")},
        )
        assert forged.status_code == 400, forged.text
        applied = await http.post(
            "/v1/billing/webhook",
            content=payload,
            headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET)},
        )
        assert applied.status_code == 200, applied.text
        assert applied.json()["verdict"] == "applied", applied.text
    # The patch is made before the answer: the Tenant is linked already.
    objects = client.CustomObjectsApi(api_client)
    tenant = objects.get_cluster_custom_object(GROUP, VERSION, "tenants", fresh.tenant.name)
    assert tenant["spec"]["billing"] == {
        "stripeCustomerId": "cus_apiFresh",
        "stripeSubscriptionId": "sub_apiFresh",
    }


@pytest.mark.asyncio(loop_scope="session")
async def test_without_a_stripe_key_there_is_no_billing(
    api_server: ApiServer, billing_api: ApiServer
) -> None:
    """The API started without PM_STRIPE_API_KEY: no billing endpoint, no webhook."""
    async with billing_api.client() as http:
        on = [p for p in (await http.get("/v1/openapi.json")).json()["paths"] if "billing" in p]
    tenant = "/v1/tenants/{tenant}/billing/"
    assert sorted(on) == sorted(
        ["/v1/billing/plans", "/v1/billing/webhook"]
        + [tenant + e for e in ("checkout", "portal", "plan", "cancel", "invoices", "usage")]
    )
    async with api_server.client() as http:
        paths = (await http.get("/v1/openapi.json")).json()["paths"]
        assert not [p for p in paths if "billing" in p]
        _error(await http.post("/v1/billing/webhook", content=b"{}"), 404, "route_missing")
