"""The audit log, GDPR and webhooks through the customer API (the API as its own process, its
own database login, the chart's RBAC): every successful write is in the tenant's audit log with
its actor and request id, readable by owners and admins only; a contact exported and erased in
the tenant's scope; webhook endpoints managed, deliveries listed with their attempts and sent
again; and nothing of one tenant is visible to or changeable by another."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import address_hash, is_suppressed
from penguinmails.common.webhook_dispatch import Dispatcher
from penguinmails.common.webhook_events import campaign_state_changed
from tests.integration.api_stack import (
    ApiServer,
    TenantAccess,
    api_database_url,
    api_kubeconfig,
    api_server,
    tenant_access,
)
from tests.integration.test_webhooks import Receiver, receiver

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server", "receiver"]  # fixtures used by name

MASTER_KEY = "api-data-protection-master-key-0123456789"
LOOPBACK = "127.0.0.0/8"


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    """The platform's key ring (GDPR) and loopback allowed for webhook URLs (the test
    receiver's; tenants may not use loopback in production)."""
    return {"PM_SUPPRESSION_KEY": MASTER_KEY, "PM_EGRESS_ALLOW": LOOPBACK}


KEY_SCOPES = [["domains:write"]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant_a(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> TenantAccess:
    return await tenant_access(api_server, db_pool, core, "audit-a", KEY_SCOPES)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant_b(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> TenantAccess:
    return await tenant_access(api_server, db_pool, core, "audit-b", KEY_SCOPES)


def _domain(name: str, fqdn: str) -> dict[str, Any]:
    return {"name": name, "spec": {"domain": fqdn, "dnsProvider": {"type": "manual"}}}


async def _all_entries(
    api: ApiServer, tenant: TenantAccess, **filters: str
) -> list[dict[str, Any]]:
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
    api_server: ApiServer, tenant_a: TenantAccess, tenant_b: TenantAccess
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
    async with api_server.client(tenant_a.keys[0]) as http:
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
    user, key = f"user:{tenant_a.owner_id}", f"api_key:{tenant_a.key_ids[0]}"
    domain_entries = [s[:4] for s in seen if s[1].startswith("sending_domain.")]
    assert domain_entries == [
        (key, "sending_domain.create", f"sending_domain:{by_key}", f"audit-key-{suffix}"),
        (user, "sending_domain.delete", f"sending_domain:{by_user}", f"audit-delete-{suffix}"),
        (user, "sending_domain.create", f"sending_domain:{by_user}", f"audit-user-{suffix}"),
    ]
    # The API runs on loopback: the client's address is recorded as seen by the server.
    assert {s[4] for s in seen} == {"127.0.0.1"}
    # The API key's creation (by the owner, in the fixture) is there too, under its id.
    assert (user, "api_key.create", f"api_key:{tenant_a.key_ids[0]}") in [s[:3] for s in seen]
    filtered = await _all_entries(api_server, tenant_a, action="sending_domain.*", actor=key)
    assert [e["requestId"] for e in filtered] == [f"audit-key-{suffix}"]

    # Tenant B sees none of it: its own log holds only its own entries, A's log is a 404.
    theirs = await _all_entries(api_server, tenant_b)
    assert theirs and all(e["requestId"] not in {s[3] for s in seen} for e in theirs)
    assert {e["actor"] for e in theirs} == {f"user:{tenant_b.owner_id}"}
    async with api_server.client(tenant_b.owner) as http:
        probe = await http.get(f"{tenant_a.base}/audit-log")
        assert probe.status_code == 404, probe.text
    async with api_server.client(tenant_b.keys[0]) as http:
        assert (await http.get(f"{tenant_a.base}/audit-log")).status_code == 404
    # Inside A: a viewer and an API key may not read it.
    for token in (tenant_a.viewer, tenant_a.keys[0]):
        async with api_server.client(token) as http:
            denied = await http.get(f"{tenant_a.base}/audit-log")
            assert denied.status_code == 403, denied.text


async def test_audit_log_filters_name_the_bad_field(
    api_server: ApiServer, tenant_a: TenantAccess
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


async def test_gdpr_export_and_erase_in_the_tenants_scope(
    api_server: ApiServer, tenant_a: TenantAccess, tenant_b: TenantAccess, db_pool: asyncpg.Pool
) -> None:
    key = MasterKeys.parse(MASTER_KEY).suppression_key()
    address = f"jane-{uuid.uuid4().hex[:6]}@example.com"
    csv = f"email,first_name\n{address},Jane\n".encode()
    # The same address in both tenants: erasing it in A leaves B's untouched.
    for tenant in (tenant_a, tenant_b):
        async with tenant_connection(db_pool, tenant.setup.id) as conn:
            report = await import_contacts(conn, "newsletter", csv, key)
            assert report.imported == 1, report.errors
    body = {"email": address}
    async with api_server.client(tenant_a.owner) as http:
        exported = await http.post(f"{tenant_a.base}/gdpr/export", json=body)
        assert exported.status_code == 200, exported.text
        document = exported.json()
        assert document["format"] == "penguinmails.contact-export/v1", document
        assert [c["email"] for c in document["contacts"]] == [address], document
        assert address not in (await http.get(f"{tenant_a.base}/audit-log")).text
        bad = await http.post(f"{tenant_a.base}/gdpr/erase", json={"email": "not-an-address"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "email", bad.text
    # Refused to a viewer (403), to an API key (403), to another tenant's owner (404).
    for token, status in ((tenant_a.viewer, 403), (tenant_a.keys[0], 403), (tenant_b.owner, 404)):
        async with api_server.client(token) as http:
            for action in ("export", "erase"):
                probe = await http.post(f"{tenant_a.base}/gdpr/{action}", json=body)
                assert probe.status_code == status, (action, probe.text)
                assert address not in probe.text
    async with api_server.client(tenant_a.owner) as http:
        erased = await http.post(f"{tenant_a.base}/gdpr/erase", json=body)
        assert erased.status_code == 200, erased.text
        assert erased.json()["contactsDeleted"] == 1 and erased.json()["suppressionAdded"]
        again = (await http.post(f"{tenant_a.base}/gdpr/export", json=body)).json()
        assert again["contacts"] == [], again
        log = await _all_entries(api_server, tenant_a, action="contact.*")
    hashed = address_hash(key, address)
    # Each recorded once (by the library, not twice by the middleware), keyed hash as target.
    assert [e["action"] for e in log] == ["contact.export", "contact.erase", "contact.export"]
    assert {e["target"] for e in log} == {f"address:{hashed.hex()}"}
    assert {e["actor"] for e in log} == {f"user:{tenant_a.owner_id}"}
    async with tenant_connection(db_pool, tenant_a.setup.id) as conn:
        assert await is_suppressed(conn, hashed)
    async with tenant_connection(db_pool, tenant_b.setup.id) as conn:
        kept = await conn.fetchval("SELECT count(*) FROM contacts WHERE email = $1", address)
        assert kept == 1


async def test_webhook_endpoints_deliveries_and_redelivery(
    api_server: ApiServer,
    tenant_a: TenantAccess,
    tenant_b: TenantAccess,
    db_pool: asyncpg.Pool,
    receiver: Receiver,
) -> None:
    hooks = f"{tenant_a.base}/webhook-endpoints"
    async with api_server.client(tenant_a.owner) as http:
        refused = await http.post(
            hooks,
            json={"url": "http://169.254.169.254/latest", "eventTypes": ["campaign.state_changed"]},
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "url"
        made = await http.post(
            hooks,
            json={"url": receiver.url, "eventTypes": ["campaign.state_changed"]},
            headers={"X-Request-Id": "hook-create"},
        )
        assert made.status_code == 201, made.text
        assert made.headers["cache-control"] == "no-store"
        endpoint = made.json()
        receiver.secret = endpoint["secret"]
        assert receiver.secret.startswith("whsec_")
        listed = (await http.get(hooks)).json()["data"]
        assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
        changed = await http.patch(f"{hooks}/{endpoint['id']}", json={"description": "ops"})
        assert changed.status_code == 200 and changed.json()["description"] == "ops"

    # A producer emits (the operator's hook, with the platform's login), the dispatcher posts.
    async with tenant_connection(db_pool, tenant_a.setup.id) as conn:
        assert await campaign_state_changed(
            conn, tenant_a.setup.namespace, "q4", "Paused", "Sending"
        )
    dispatcher = Dispatcher(db_pool, policy=_loopback_policy())
    try:
        assert await dispatcher.deliver_due(tenant_a.setup.id) == 1
        async with api_server.client(tenant_a.owner) as http:
            page = (await http.get(f"{hooks}/{endpoint['id']}/deliveries")).json()
            (delivery,) = page["data"]
            assert (
                delivery["state"] == "succeeded"
                and delivery["eventType"] == "campaign.state_changed"
            )
            assert [a["statusCode"] for a in delivery["attempts"]] == [200]
            again = await http.post(
                f"/v1/tenants/{tenant_a.setup.name}/webhook-deliveries/{delivery['id']}/redeliver"
            )
            assert again.status_code == 202, again.text
            rotated = await http.post(f"{hooks}/{endpoint['id']}/rotate-secret")
            assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
            receiver.secret = rotated.json()["secret"]
        assert await dispatcher.deliver_due(tenant_a.setup.id) == 1
    finally:
        await dispatcher.aclose()
    assert receiver.refused_signatures == 0 and len(receiver.received) == 2
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert ids == {delivery["eventId"]}, ids  # the same webhook-id on the redelivery

    # Another tenant: every endpoint with A's ids is a 404 (through its own tenant or A's).
    probes = 0
    for token in (tenant_b.owner,):
        async with api_server.client(token) as http:
            for base in (tenant_b.base, tenant_a.base):
                one = f"{base}/webhook-endpoints/{endpoint['id']}"
                for method, path, body in (
                    ("GET", one, None),
                    ("PATCH", one, {"enabled": False}),
                    ("DELETE", one, None),
                    ("POST", f"{one}/rotate-secret", None),
                    ("GET", f"{one}/deliveries", None),
                    ("POST", f"{base}/webhook-deliveries/{delivery['id']}/redeliver", None),
                ):
                    probe = await http.request(method, path, json=body)
                    probes += 1
                    assert probe.status_code == 404, (method, path, probe.text)
                    assert endpoint["id"] not in probe.text and "whsec_" not in probe.text
                listing = await http.get(f"{base}/webhook-endpoints")
                probes += 1
                assert (
                    listing.status_code == 404
                    if base == tenant_a.base
                    else listing.json()["data"] == []
                )
    for token in (tenant_a.viewer, tenant_a.keys[0]):
        async with api_server.client(token) as http:
            probe = await http.get(hooks)
            probes += 1
            assert probe.status_code == 403, probe.text
    print(f"webhook cross-tenant probes: {probes}")

    async with api_server.client(tenant_a.owner) as http:
        gone = await http.delete(f"{hooks}/{endpoint['id']}")
        assert gone.status_code == 204, gone.text
        assert (await http.get(f"{hooks}/{endpoint['id']}")).status_code == 404
    log = await _all_entries(api_server, tenant_a)
    actions = [e["action"] for e in log if e["action"].startswith("webhook_")]
    assert actions == [
        "webhook_endpoint.delete",
        "webhook_endpoint.rotate_secret",
        "webhook_delivery.redeliver",
        "webhook_endpoint.update",
        "webhook_endpoint.create",
    ], actions


def _loopback_policy() -> EgressPolicy:
    return EgressPolicy(allowed=(ipaddress.ip_network(LOOPBACK),), cluster=())
