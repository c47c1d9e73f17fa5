"""A tenant's people through the API running as its own process: invitations by e-mail token
(accepted by a new and by an existing user, refused when reused, expired, revoked or for another
address), memberships listed, changed and removed under the owner rules (admins cannot make or
touch owners, the last owner can be neither removed nor demoted), each write in the audit log."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.common.db.accounts import Role
from penguinmails.common.db.members import INVITATION_TTL
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

NEW_PASSWORD = "a brand new passphrase"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(db_pool: asyncpg.Pool, core: client.CoreV1Api) -> TenantSetup:
    return await make_tenant(db_pool, core, "apimembers")


def _code(response: httpx.Response) -> Any:
    return response.json()["error"]["code"]


async def _token(api: ApiServer, email: str) -> str:
    token: str = (await sign_in(api, email))["accessToken"]
    return token


async def _invite(http: httpx.AsyncClient, tenant: TenantSetup, email: str, role: str) -> Any:
    made = await http.post(
        f"/v1/tenants/{tenant.name}/invitations", json={"email": email, "role": role}
    )
    assert made.status_code == 201, made.text
    return made.json()


async def test_invitations_are_accepted_once_by_the_invited_address(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup
) -> None:
    owner = await make_user(db_pool, tenant, Role.OWNER)
    path = f"/v1/tenants/{tenant.name}"
    async with api_server.client(await _token(api_server, owner)) as http:
        fresh = await _invite(http, tenant, "Newcomer@Example.com", "member")
        assert fresh["token"].startswith("pm_inv_") and fresh["status"] == "pending"
        # No relay configured here: the answer says the invitation was not e-mailed.
        assert fresh["emailDelivery"]["status"] == "not_configured"
        assert "PM_NOTICE_SMTP_HOST" in fresh["emailDelivery"]["message"]
        lasts = fresh["expiresAt"], fresh["createdAt"]
        listed = (await http.get(f"{path}/invitations")).json()["data"]
        assert [i["id"] for i in listed] == [fresh["id"]]
        assert "token" not in listed[0]
        existing = await make_user(db_pool, None, Role.VIEWER)
        for_existing = await _invite(http, tenant, existing.upper(), "viewer")
        late = await _invite(http, tenant, "late@example.com", "member")
        revoked = await _invite(http, tenant, "revoked@example.com", "member")
        assert (await http.delete(f"{path}/invitations/{revoked['id']}")).status_code == 204
        bad = await http.post(f"{path}/invitations", json={"email": "nope", "role": "member"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "email"
    stored = await db_pool.fetchrow(
        "SELECT token_hash, expires_at - created_at AS ttl FROM invitations WHERE id = $1",
        fresh["id"],
    )
    assert stored is not None
    assert stored["ttl"] == INVITATION_TTL == timedelta(days=7), lasts
    assert fresh["token"].encode() not in bytes(stored["token_hash"])

    async with api_server.client() as anonymous:
        # What each offers, without a sign-in and changing nothing (the accept page's call).
        offered = await anonymous.post("/v1/invitations/lookup", json={"token": fresh["token"]})
        assert offered.status_code == 200, offered.text
        assert offered.json() == {
            "tenant": tenant.name,
            "tenantDisplayName": None,
            "email": "Newcomer@Example.com",
            "role": "member",
            "expiresAt": fresh["expiresAt"],
            "accountExists": False,
        }
        to_existing = await anonymous.post(
            "/v1/invitations/lookup", json={"token": for_existing["token"]}
        )
        assert to_existing.json()["accountExists"] is True
        assert to_existing.json()["role"] == "viewer"
        for spent in (revoked["token"], "pm_inv_never-issued"):
            unknown = await anonymous.post("/v1/invitations/lookup", json={"token": spent})
            assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "token"
        accepted = await anonymous.post(
            "/v1/invitations/accept", json={"token": fresh["token"], "password": NEW_PASSWORD}
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["tenant"] == tenant.name
        assert accepted.json()["role"] == "member" and accepted.json()["newUser"] is True
        reused = await anonymous.post(
            "/v1/invitations/accept", json={"token": fresh["token"], "password": NEW_PASSWORD}
        )
        assert reused.status_code == 404, reused.text
        # An address with an account signs in to accept; a new account for it is refused.
        taken = await anonymous.post(
            "/v1/invitations/accept",
            json={"token": for_existing["token"], "password": NEW_PASSWORD},
        )
        assert taken.status_code == 409 and _code(taken) == "account_exists"
        gone = await anonymous.post(
            "/v1/invitations/accept", json={"token": revoked["token"], "password": NEW_PASSWORD}
        )
        assert gone.status_code == 404
    newcomer = await sign_in(api_server, "newcomer@example.com", NEW_PASSWORD)
    async with api_server.client(newcomer["accessToken"]) as http:
        me = (await http.get("/v1/me")).json()
        assert me["memberships"] == [{"tenant": tenant.name, "role": "member"}]
        # Another address's invitation is not the newcomer's to accept.
        other = await http.post("/v1/invitations/accept", json={"token": for_existing["token"]})
        assert other.status_code == 403 and _code(other) == "invitation_email_mismatch"
    async with api_server.client(await _token(api_server, existing)) as http:
        joined = await http.post("/v1/invitations/accept", json={"token": for_existing["token"]})
        assert joined.status_code == 200, joined.text
        assert joined.json()["newUser"] is False and joined.json()["role"] == "viewer"
        assert (await http.get(f"{path}/campaigns")).status_code == 200

    # Seven days on (the expiry moved back rather than the clock forward): refused.
    await db_pool.execute(
        "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = $1",
        late["id"],
    )
    async with api_server.client() as anonymous:
        expired = await anonymous.post(
            "/v1/invitations/accept", json={"token": late["token"], "password": NEW_PASSWORD}
        )
        assert expired.status_code == 410 and _code(expired) == "invitation_expired"
        looked = await anonymous.post("/v1/invitations/lookup", json={"token": late["token"]})
        assert looked.status_code == 410 and _code(looked) == "invitation_expired"
        used = await anonymous.post("/v1/invitations/lookup", json={"token": fresh["token"]})
        assert used.status_code == 404
    async with api_server.client(await _token(api_server, owner)) as http:
        states = {
            i["email"]: i["status"] for i in (await http.get(f"{path}/invitations")).json()["data"]
        }
        assert states == {
            "Newcomer@Example.com": "accepted",
            existing.upper(): "accepted",
            "late@example.com": "expired",
            "revoked@example.com": "revoked",
        }
    actions = [
        r["action"]
        for r in await db_pool.fetch(
            "SELECT action FROM audit_log WHERE tenant_id = $1 AND action LIKE 'invitation.%' "
            "ORDER BY id",
            tenant.id,
        )
    ]
    assert actions == ["invitation.create"] * 4 + ["invitation.delete"] + ["invitation.accept"] * 2


async def test_roles_change_under_the_owner_rules(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> None:
    team = await make_tenant(db_pool, core, "apiteam")
    owner = await make_user(db_pool, team, Role.OWNER)
    admin = await make_user(db_pool, team, Role.ADMIN)
    member = await make_user(db_pool, team, Role.MEMBER)
    viewer = await make_user(db_pool, team, Role.VIEWER)
    ids = {
        e: await db_pool.fetchval("SELECT id FROM users WHERE email = $1", e)
        for e in (owner, admin, member, viewer)
    }
    path = f"/v1/tenants/{team.name}/members"
    async with api_server.client(await _token(api_server, viewer)) as http:
        assert (await http.get(path)).status_code == 403
    async with api_server.client(await _token(api_server, admin)) as http:
        listed = (await http.get(path)).json()["data"]
        assert {m["email"]: m["role"] for m in listed} == {
            owner: "owner",
            admin: "admin",
            member: "member",
            viewer: "viewer",
        }
        # Admins manage admins and below, never owners.
        made_owner = await http.patch(f"{path}/{ids[member]}", json={"role": "owner"})
        assert made_owner.status_code == 403 and _code(made_owner) == "owner_required"
        demote_owner = await http.patch(f"{path}/{ids[owner]}", json={"role": "viewer"})
        assert demote_owner.status_code == 403
        assert (await http.delete(f"{path}/{ids[owner]}")).status_code == 403
        invite_owner = await http.post(
            f"/v1/tenants/{team.name}/invitations",
            json={"email": "boss@example.com", "role": "owner"},
        )
        assert invite_owner.status_code == 403 and _code(invite_owner) == "owner_required"
        promoted = await http.patch(f"{path}/{ids[viewer]}", json={"role": "member"})
        assert promoted.status_code == 200 and promoted.json()["role"] == "member"
    member_token = await _token(api_server, member)
    async with api_server.client(await _token(api_server, owner)) as http:
        # The last owner stays.
        last = await http.patch(f"{path}/{ids[owner]}", json={"role": "admin"})
        assert last.status_code == 409 and _code(last) == "last_owner", last.text
        assert _code(await http.delete(f"{path}/{ids[owner]}")) == "last_owner"
        handed = await http.patch(f"{path}/{ids[admin]}", json={"role": "owner"})
        assert handed.status_code == 200, handed.text
        stepped_down = await http.patch(f"{path}/{ids[owner]}", json={"role": "admin"})
        assert stepped_down.status_code == 200, stepped_down.text
        removed = await http.delete(f"{path}/{ids[member]}")
        assert removed.status_code == 204
        missing = await http.delete(f"{path}/{ids[member]}")
        assert missing.status_code == 404
    async with api_server.client(await _token(api_server, admin)) as http:
        # The new owner is now the last one.
        alone = await http.delete(f"{path}/{ids[admin]}")
        assert alone.status_code == 409 and _code(alone) == "last_owner"
    async with api_server.client(member_token) as http:
        # A removed member's sign-in no longer sees the tenant, at once.
        assert (await http.get(f"/v1/tenants/{team.name}/campaigns")).status_code == 404
    roles = {
        email: await db_pool.fetchval(
            "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2", team.id, uid
        )
        for email, uid in ids.items()
    }
    assert roles == {owner: "admin", admin: "owner", member: None, viewer: "member"}
    entries = await db_pool.fetch(
        "SELECT action, target FROM audit_log WHERE tenant_id = $1 ORDER BY id", team.id
    )
    assert [(e["action"], e["target"]) for e in entries] == [
        ("member.update", f"member:{ids[viewer]}"),
        ("member.update", f"member:{ids[admin]}"),
        ("member.update", f"member:{ids[owner]}"),
        ("member.delete", f"member:{ids[member]}"),
    ]


async def test_another_tenants_credentials_reach_no_member_or_invitation(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> None:
    victim = await make_tenant(db_pool, core, "apivictim")
    attacker = await make_tenant(db_pool, core, "apiattacker")
    victim_owner = await make_user(db_pool, victim, Role.OWNER)
    owner_id = await db_pool.fetchval("SELECT id FROM users WHERE email = $1", victim_owner)
    victim_token = await _token(api_server, victim_owner)
    async with api_server.client(victim_token) as http:
        pending = await _invite(http, victim, "pending@example.com", "admin")
    attacker_owner = await _token(api_server, await make_user(db_pool, attacker, Role.OWNER))
    credentials = {
        "attacker owner": attacker_owner,
        "attacker API key": await api_key(api_server, attacker_owner, attacker, ["domains:write"]),
        "victim's own API key": await api_key(api_server, victim_token, victim, ["domains:write"]),
        "user in no tenant": await _token(api_server, await make_user(db_pool, None, Role.OWNER)),
    }

    def probes(tenant: str) -> list[tuple[str, str, dict[str, Any] | None]]:
        base = f"/v1/tenants/{tenant}"
        return [
            ("GET", f"{base}/members", None),
            ("PATCH", f"{base}/members/{owner_id}", {"role": "viewer"}),
            ("DELETE", f"{base}/members/{owner_id}", None),
            ("GET", f"{base}/invitations", None),
            ("POST", f"{base}/invitations", {"email": "mole@example.com", "role": "owner"}),
            ("DELETE", f"{base}/invitations/{pending['id']}", None),
            ("GET", f"{base}/security", None),
            ("PATCH", f"{base}/security", {"mfaRequired": False}),
        ]

    counts: dict[int, int] = {}
    for who, credential in credentials.items():
        # The victim's tenant, and the attacker's own tenant with the victim's ids.
        for tenant in (victim.name, attacker.name):
            if who == "victim's own API key" and tenant == attacker.name:
                continue
            async with api_server.client(credential) as http:
                for method, path, body in probes(tenant):
                    answer = await http.request(method, path, json=body)
                    counts[answer.status_code] = counts.get(answer.status_code, 0) + 1
                    if tenant == attacker.name and who == "attacker owner":
                        # Their own tenant: lists answer, the victim's ids are not found there.
                        assert answer.status_code in (200, 201, 404), (method, path, answer.text)
                        assert "pending@example.com" not in answer.text
                        assert victim_owner not in answer.text
                        continue
                    assert answer.status_code in (403, 404), (who, method, path, answer.text)
                    assert victim_owner not in answer.text and "pending@" not in answer.text
    print(f"\nmembers cross-tenant probes: {sum(counts.values())}, by status: {counts}")
    role = await db_pool.fetchval(
        "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2", victim.id, owner_id
    )
    assert role == "owner"
    async with api_server.client(victim_token) as http:
        states = [
            i["status"]
            for i in (await http.get(f"/v1/tenants/{victim.name}/invitations")).json()["data"]
        ]
    assert states == ["pending"]
