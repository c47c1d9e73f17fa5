"""The audit log, GDPR and webhooks through the customer API (the API as its own process, its
own database login, the chart's RBAC): every successful write is in the tenant's audit log with
its actor and request id, readable by owners and admins only, and nothing of one tenant is
visible to another."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client

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

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name


@dataclass(frozen=True)
class Tenant:
    setup: TenantSetup
    owner: str
    owner_id: str
    viewer: str
    key: str
    key_id: str

    @property
    def base(self) -> str:
        return f"/v1/tenants/{self.setup.name}"


async def _tenant(
    api: ApiServer, pool: asyncpg.Pool, core: client.CoreV1Api, prefix: str
) -> Tenant:
    setup = await make_tenant(pool, core, prefix)
    owner = (await sign_in(api, await make_user(pool, setup, Role.OWNER)))["accessToken"]
    viewer = (await sign_in(api, await make_user(pool, setup, Role.VIEWER)))["accessToken"]
    key = await api_key(api, owner, setup, ["domains:write"])
    async with api.client(owner) as http:
        me = (await http.get("/v1/me")).json()
        keys = (await http.get(f"/v1/tenants/{setup.name}/api-keys")).json()["data"]
    return Tenant(setup, owner, me["id"], viewer, key, keys[0]["id"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant_a(api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api) -> Tenant:
    return await _tenant(api_server, db_pool, core, "audit-a")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant_b(api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api) -> Tenant:
    return await _tenant(api_server, db_pool, core, "audit-b")


def _domain(name: str, fqdn: str) -> dict[str, Any]:
    return {"name": name, "spec": {"domain": fqdn, "dnsProvider": {"type": "manual"}}}


async def _all_entries(api: ApiServer, tenant: Tenant, **filters: str) -> list[dict[str, Any]]:
    """Every entry, walked one page of 2 at a time (the cursor is what is being tested)."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    async with api.client(tenant.owner) as http:
        while True:
            params = {"limit": "2", **filters, **({"cursor": cursor} if cursor else {})}
            page = await http.get(f"{tenant.base}/audit-log", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            entries += body["data"]
            if not body["hasMore"]:
                assert "nextCursor" not in body or body["nextCursor"] is None
                return entries
            cursor = body["nextCursor"]


async def test_every_write_is_audited_with_its_actor_and_request_id(
    api_server: ApiServer, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    suffix = uuid.uuid4().hex[:6]
    by_user, by_key = f"user-{suffix}", f"key-{suffix}"
    async with api_server.client(tenant_a.owner) as http:
        made = await http.post(
            f"{tenant_a.base}/sending-domains",
            json=_domain(by_user, f"{by_user}.example.com"),
            headers={"X-Request-Id": f"audit-user-{suffix}", "Idempotency-Key": suffix},
        )
        assert made.status_code == 201, made.text
        # A replay does nothing, and records nothing.
        again = await http.post(
            f"{tenant_a.base}/sending-domains",
            json=_domain(by_user, f"{by_user}.example.com"),
            headers={"X-Request-Id": f"audit-replay-{suffix}", "Idempotency-Key": suffix},
        )
        assert again.headers.get("Idempotent-Replayed") == "true", again.text
        # A refused write (the name exists) records nothing either.
        refused = await http.post(
            f"{tenant_a.base}/sending-domains", json=_domain(by_user, f"{by_user}.example.com")
        )
        assert refused.status_code == 409, refused.text
        gone = await http.delete(
            f"{tenant_a.base}/sending-domains/{by_user}",
            headers={"X-Request-Id": f"audit-delete-{suffix}"},
        )
        assert gone.status_code == 204, gone.text
    async with api_server.client(tenant_a.key) as http:
        made = await http.post(
            f"{tenant_a.base}/sending-domains",
            json=_domain(by_key, f"{by_key}.example.com"),
            headers={"X-Request-Id": f"audit-key-{suffix}"},
        )
        assert made.status_code == 201, made.text

    entries = await _all_entries(api_server, tenant_a)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids), ids
    seen = [
        (e["actor"], e["action"], e["target"], e["requestId"], e["sourceAddress"]) for e in entries
    ]
    print(f"audit log of {tenant_a.setup.name}: {len(entries)} entries: {seen}")
    user, key = f"user:{tenant_a.owner_id}", f"api_key:{tenant_a.key_id}"
    domain_entries = [s[:4] for s in seen if s[1].startswith("sending_domain.")]
    assert domain_entries == [
        (key, "sending_domain.create", f"sending_domain:{by_key}", f"audit-key-{suffix}"),
        (user, "sending_domain.delete", f"sending_domain:{by_user}", f"audit-delete-{suffix}"),
        (user, "sending_domain.create", f"sending_domain:{by_user}", f"audit-user-{suffix}"),
    ]
    # The API runs on loopback: the client's address is recorded as seen by the server.
    assert {s[4] for s in seen} == {"127.0.0.1"}
    # The API key's creation (by the owner, in the fixture) is there too, under its id.
    assert (user, "api_key.create", f"api_key:{tenant_a.key_id}") in [s[:3] for s in seen]
    filtered = await _all_entries(api_server, tenant_a, action="sending_domain.*", actor=key)
    assert [e["requestId"] for e in filtered] == [f"audit-key-{suffix}"]

    # Tenant B sees none of it: its own log holds only its own entries, A's log is a 404.
    theirs = await _all_entries(api_server, tenant_b)
    assert theirs and all(e["requestId"] not in {s[3] for s in seen} for e in theirs)
    assert {e["actor"] for e in theirs} == {f"user:{tenant_b.owner_id}"}
    async with api_server.client(tenant_b.owner) as http:
        probe = await http.get(f"{tenant_a.base}/audit-log")
        assert probe.status_code == 404, probe.text
    async with api_server.client(tenant_b.key) as http:
        assert (await http.get(f"{tenant_a.base}/audit-log")).status_code == 404
    # Inside A: a viewer and an API key may not read it.
    for token in (tenant_a.viewer, tenant_a.key):
        async with api_server.client(token) as http:
            denied = await http.get(f"{tenant_a.base}/audit-log")
            assert denied.status_code == 403, denied.text


async def test_audit_log_filters_name_the_bad_field(
    api_server: ApiServer, tenant_a: Tenant
) -> None:
    async with api_server.client(tenant_a.owner) as http:
        for params, field in (
            ({"action": "Not An Action"}, "action"),
            ({"cursor": "forged"}, "cursor"),
            ({"since": "2026-12-01T00:00:00"}, "since"),
        ):
            response = await http.get(f"{tenant_a.base}/audit-log", params=params)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == field, response.text
