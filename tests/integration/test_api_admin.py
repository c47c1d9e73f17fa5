"""Platform administrators through the API running as its own process: the flag set only by the
CLI with the platform's database login (the API's login is refused), a second factor required
of their sign-in, every /v1/admin endpoint 403 for everyone else (count printed), tenants listed
with tier, suspension and usage, a suspension, a resumption and a tier change written to the
Tenant on the real API server (under the administrators' field manager), and billing plans
edited; each write in the audit logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.api.billing import plans
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.common import totp
from penguinmails.common.db.accounts import Role
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_key,
    api_kubeconfig,
    api_server,
    make_tenant,
    make_user,
    sign_in,
)
from tests.integration.conftest import GROUP, VERSION

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

PLAN = {"priceMonthly": "price_admin_test_monthly", "emailsPerMonth": 123_000}


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    """The platform's key ring: administrators sign in with a second factor."""
    return {"PM_SUPPRESSION_KEY": "admin-master-key-0123456789abcdef0123"}


async def enable_mfa(api: ApiServer, token: str) -> None:
    """Enroll and confirm an authenticator in this sign-in (which thereby proved it)."""
    async with api.client(token) as http:
        secret = (await http.post("/v1/me/mfa/enroll")).json()["secret"]
        code = totp.code_at(secret, time.time())
        confirmed = await http.post("/v1/me/mfa/confirm", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(db_pool: asyncpg.Pool, core: client.CoreV1Api) -> TenantSetup:
    return await make_tenant(db_pool, core, "apiadmin")


@pytest.fixture(scope="module")
def tenant_resource(tenant: TenantSetup, custom_objects: client.CustomObjectsApi) -> Iterator[str]:
    """The Tenant resource of `tenant` on the API server (no operator runs in this module)."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": tenant.name},
        "spec": {"tier": "starter", "contactEmail": "ops@example.com"},
    }
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    yield tenant.name
    custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", tenant.name)


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONSAFEPATH": "1", "PM_DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "penguinmails.api.http", "platform-admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _requests(tenant: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """One valid request per admin operation of the document (checked against it)."""
    return [
        ("GET", "/v1/admin/tenants", None),
        ("POST", f"/v1/admin/tenants/{tenant}/suspend", {"reason": "Abuse report 42"}),
        ("POST", f"/v1/admin/tenants/{tenant}/resume", None),
        ("PATCH", f"/v1/admin/tenants/{tenant}", {"tier": "business"}),
        ("GET", "/v1/admin/plans", None),
        ("PUT", "/v1/admin/plans/enterprise", PLAN),
        ("GET", "/v1/admin/queues", None),
        ("GET", "/v1/admin/smtp-servers", None),
    ]


async def test_only_platform_administrators_reach_the_admin_endpoints(
    api_server: ApiServer,
    db_pool: asyncpg.Pool,
    postgres_dsn: str,
    api_database_url: str,
    tenant: TenantSetup,
    tenant_resource: str,
) -> None:
    owner = await make_user(db_pool, tenant, Role.OWNER)
    outsider = await make_user(db_pool, None, Role.VIEWER)
    owner_token = (await sign_in(api_server, owner))["accessToken"]
    key = await api_key(
        api_server, owner_token, tenant, ["domains:write", "campaigns:write", "smtp_servers:write"]
    )
    callers = {
        "owner": owner_token,
        "outsider": (await sign_in(api_server, outsider))["accessToken"],
        "api key": key,
        "anonymous": None,
    }
    async with api_server.client() as http:
        document = (await http.get("/v1/openapi.json")).json()
    operations = {
        (method.upper(), path)
        for path, ops in document["paths"].items()
        if path.startswith("/v1/admin")
        for method in ops
    }
    requests = _requests(tenant.name)
    templated = {
        (m, p.replace(tenant.name, "{tenant}").replace("enterprise", "{tier}"))
        for m, p, _ in requests
    }
    assert templated == operations
    probes = 0
    for label, token in callers.items():
        async with api_server.client(token) as http:
            for method, path, body in requests:
                answer = await http.request(method, path, json=body)
                expected = 401 if token is None else 403
                assert answer.status_code == expected, (label, method, path, answer.text)
                probes += 1
    print(f"\nadmin: {probes} probes of {len(operations)} operations by non-administrators refused")
    # Nothing changed: the Tenant is as created, no plan was written.
    assert await plans.get_plan(db_pool, Tier.ENTERPRISE) is None

    # The API's own database login cannot make an administrator; the platform's can.
    refused = _cli(api_database_url, owner)
    assert refused.returncode == 1 and "may not change" in refused.stderr, refused
    made = _cli(postgres_dsn, owner)
    assert made.returncode == 0, made.stderr
    # An administrator's password alone opens nothing: the sign-in needs a second factor.
    async with api_server.client(owner_token) as http:
        password_only = await http.get("/v1/admin/plans")
    assert password_only.status_code == 403, password_only.text
    assert password_only.json()["error"]["code"] == "mfa_required"
    await enable_mfa(api_server, owner_token)
    assert (await http_status(api_server, owner_token, "GET", "/v1/admin/plans")) == 200
    revoked = _cli(postgres_dsn, owner, "--revoke")
    assert revoked.returncode == 0, revoked.stderr
    assert (await http_status(api_server, owner_token, "GET", "/v1/admin/plans")) == 403


async def http_status(api: ApiServer, token: str, method: str, path: str) -> int:
    async with api.client(token) as http:
        return (await http.request(method, path)).status_code


async def test_an_administrator_suspends_resumes_and_retiers_through_the_api_server(
    api_server: ApiServer,
    db_pool: asyncpg.Pool,
    postgres_dsn: str,
    tenant: TenantSetup,
    tenant_resource: str,
    custom_objects: client.CustomObjectsApi,
) -> None:
    admin = await make_user(db_pool, None, Role.VIEWER)
    assert _cli(postgres_dsn, admin).returncode == 0
    admin_id = await db_pool.fetchval("SELECT id FROM users WHERE email = $1", admin)
    token = (await sign_in(api_server, admin))["accessToken"]
    await enable_mfa(api_server, token)

    def tenant_spec() -> dict[str, Any]:
        found: dict[str, Any] = custom_objects.get_cluster_custom_object(
            GROUP, VERSION, "tenants", tenant.name
        )
        return found

    base = f"/v1/admin/tenants/{tenant.name}"
    async with api_server.client(token) as http:
        listed = (await http.get("/v1/admin/tenants", params={"limit": 100})).json()
        mine = [t for t in listed["data"] if t["name"] == tenant.name]
        assert mine == [
            {
                "name": tenant.name,
                "tier": "starter",
                "suspended": False,
                "suspendReason": None,
                "emailsSentThisMonth": None,
                "billingManaged": False,
                "createdAt": mine[0]["createdAt"],
            }
        ]
        billing_like = await http.post(f"{base}/suspend", json={"reason": "Billing: unpaid"})
        assert billing_like.status_code == 400
        assert billing_like.json()["error"]["param"] == "reason"
        suspended = await http.post(f"{base}/suspend", json={"reason": "Abuse report 42"})
        assert suspended.status_code == 200, suspended.text
        assert suspended.json()["suspended"] is True
        obj = tenant_spec()
        assert obj["spec"]["suspended"] is True
        assert obj["spec"]["suspendReason"] == "Abuse report 42"
        managers = {f["manager"] for f in obj["metadata"]["managedFields"]}
        assert "penguinmails-admin" in managers
        resumed = await http.post(f"{base}/resume")
        assert resumed.status_code == 200, resumed.text
        obj = tenant_spec()
        assert obj["spec"]["suspended"] is False and "suspendReason" not in obj["spec"]
        retiered = await http.patch(base, json={"tier": "business"})
        assert retiered.status_code == 200 and retiered.json()["tier"] == "business"
        assert tenant_spec()["spec"]["tier"] == "business"
        bad_tier = await http.patch(base, json={"tier": "platinum"})
        assert bad_tier.status_code == 400 and bad_tier.json()["error"]["param"] == "tier"
        missing = await http.post("/v1/admin/tenants/no-such-tenant/resume")
        assert missing.status_code == 404

        put = await http.put("/v1/admin/plans/enterprise", json={**PLAN, "overageAllowed": True})
        assert put.status_code == 200, put.text
        listed_plans = (await http.get("/v1/admin/plans")).json()["data"]
        assert {"tier": "enterprise", "priceYearly": None, "overageAllowed": True, **PLAN} in (
            listed_plans
        )
        clash = await http.put("/v1/admin/plans/business", json=PLAN)
        assert clash.status_code == 409 and clash.json()["error"]["code"] == "price_in_use"
    plan = await plans.get_plan(db_pool, Tier.ENTERPRISE)
    assert plan is not None and plan.emails_per_month == 123_000 and plan.overage_allowed

    platform = [
        (r["action"], r["target"])
        for r in await db_pool.fetch(
            "SELECT action, target FROM platform_audit_log WHERE actor = $1 ORDER BY id",
            f"user:{admin_id}",
        )
    ]
    target = f"tenant:{tenant.name}"
    assert platform == [
        ("mfa.enroll", f"user:{admin_id}"),
        ("mfa.confirm", f"user:{admin_id}"),
        ("tenant.suspend", target),
        ("tenant.resume", target),
        ("tenant.change_tier", target),
        ("plan.put", "plan:enterprise"),
    ]
    await db_pool.execute("DELETE FROM billing_plans WHERE tier = 'enterprise'")
    in_tenant = [
        r["action"]
        for r in await db_pool.fetch(
            "SELECT action FROM audit_log WHERE tenant_id = $1 AND actor = $2 ORDER BY id",
            tenant.id,
            f"user:{admin_id}",
        )
    ]
    assert in_tenant == ["tenant.suspend", "tenant.resume", "tenant.change_tier"]
