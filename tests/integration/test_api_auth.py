"""The customer API's authentication and authorization, against the API running as its own
process (uvicorn) on PostgreSQL, Redis and the control plane: sign-in and its throttle, refresh
rotation and family revocation on reuse, API key scopes, roles, and forged, expired,
`alg: none` and revoked credentials refused."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from kubernetes import client

from penguinmails.api.http.tokens import SigningKeyRing
from penguinmails.common.db.accounts import Role
from tests.integration.api_stack import (
    PASSWORD,
    ApiServer,
    TenantSetup,
    api_database_url,
    api_key,
    api_kubeconfig,
    api_server,
    make_tenant,
    make_user,
    sign_in,
    start_api,
    stop_api,
)

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(db_pool: asyncpg.Pool, core: client.CoreV1Api) -> TenantSetup:
    return await make_tenant(db_pool, core, "apiauth")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "code", "message", "param"}, body
    error: dict[str, object] = body["error"]
    return error


async def test_sign_in_returns_tokens_that_open_the_tenant(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup
) -> None:
    email = await make_user(db_pool, tenant, Role.MEMBER)
    tokens = await sign_in(api_server, email.upper())  # addresses match whatever their case
    assert tokens["tokenType"] == "Bearer"
    assert tokens["expiresIn"] == 900
    header = jwt.get_unverified_header(tokens["accessToken"])
    assert header["alg"] == "EdDSA" and header["kid"] == "test-1"
    async with api_server.client(tokens["accessToken"]) as http:
        me = await http.get("/v1/me")
        assert me.status_code == 200, me.text
        assert me.json()["memberships"] == [{"tenant": tenant.name, "role": "member"}]
        listed = await http.get(f"/v1/tenants/{tenant.name}/campaigns")
        assert listed.status_code == 200, listed.text
        assert listed.json() == {"data": [], "hasMore": False}
        assert listed.headers["x-request-id"].startswith("req_")
        # A client's own request id is kept when plain, replaced when not.
        mine = await http.get("/v1/me", headers={"X-Request-Id": "client-42.a"})
        assert mine.headers["x-request-id"] == "client-42.a"
        odd = await http.get("/v1/me", headers={"X-Request-Id": "a b <script>"})
        assert odd.headers["x-request-id"].startswith("req_")
        # The JWKS verifies the token the API signed.
        jwks = (await http.get("/v1/.well-known/jwks.json")).json()
    (key,) = jwks["keys"]
    public = jwt.PyJWK(key).key
    claims = jwt.decode(
        tokens["accessToken"], public, algorithms=["EdDSA"], audience="penguinmails-api"
    )
    assert claims["iss"] == "penguinmails"


async def test_wrong_password_is_refused_and_guessing_is_throttled(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup
) -> None:
    email = await make_user(db_pool, tenant, Role.VIEWER)
    async with api_server.client() as http:
        statuses = []
        for attempt in range(5):
            response = await http.post(
                "/v1/auth/token", json={"email": email, "password": f"guess-{attempt}"}
            )
            statuses.append(response.status_code)
            assert _error(response)["type"] == "authentication_error"
        assert statuses == [401] * 5
        # Past the limit even the right password is refused until the window ends.
        blocked = await http.post("/v1/auth/token", json={"email": email, "password": PASSWORD})
        assert blocked.status_code == 429, blocked.text
        assert _error(blocked)["code"] == "sign_in_throttled"
        assert 0 < int(blocked.headers["retry-after"]) <= 900
        # An unknown address answers exactly like a wrong password.
        unknown = await http.post(
            "/v1/auth/token", json={"email": "nobody@example.com", "password": PASSWORD}
        )
        assert unknown.status_code == 401
        assert _error(unknown)["code"] == "invalid_credentials"


async def test_refresh_rotates_and_reuse_revokes_the_family(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup
) -> None:
    email = await make_user(db_pool, tenant, Role.MEMBER)
    first = await sign_in(api_server, email)
    other_session = await sign_in(api_server, email)
    async with api_server.client() as http:
        second = await http.post("/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
        assert second.status_code == 200, second.text
        rotated = second.json()
        assert rotated["refreshToken"] != first["refreshToken"]
        third = await http.post("/v1/auth/refresh", json={"refreshToken": rotated["refreshToken"]})
        assert third.status_code == 200, third.text
        latest = third.json()
        # Replaying a used token (a thief's copy): refused, and the whole family is revoked.
        replay = await http.post("/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
        assert replay.status_code == 401
        assert _error(replay)["code"] == "refresh_token_invalid"
        after = await http.post("/v1/auth/refresh", json={"refreshToken": latest["refreshToken"]})
        assert after.status_code == 401, after.text
    path = f"/v1/tenants/{tenant.name}/sending-domains"
    for token in (first["accessToken"], rotated["accessToken"], latest["accessToken"]):
        async with api_server.client(token) as http:
            refused = await http.get(path)
            assert refused.status_code == 401, refused.text
            assert _error(refused)["code"] == "token_revoked"
    # Another sign-in of the same user is another family: untouched.
    async with api_server.client(other_session["accessToken"]) as http:
        assert (await http.get(path)).status_code == 200


async def test_logout_revokes_the_access_token(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup
) -> None:
    email = await make_user(db_pool, tenant, Role.MEMBER)
    tokens = await sign_in(api_server, email)
    async with api_server.client(tokens["accessToken"]) as http:
        assert (await http.post("/v1/auth/logout")).status_code == 204
        assert (await http.get("/v1/me")).status_code == 401
        assert (await http.get(f"/v1/tenants/{tenant.name}/campaigns")).status_code == 401
    async with api_server.client() as http:
        refresh = await http.post("/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
        assert refresh.status_code == 401


async def test_forged_expired_none_and_malformed_tokens_are_refused(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup
) -> None:
    email = await make_user(db_pool, tenant, Role.OWNER)
    genuine = await sign_in(api_server, email)
    claims = jwt.decode(genuine["accessToken"], options={"verify_signature": False})
    user_id, family_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["fam"])
    ring = SigningKeyRing.parse(api_server.signing_keys)
    server_key = ring.keys["test-1"]
    attacker = Ed25519PrivateKey.generate()
    public_raw = server_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    header_none = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "test-1"}).encode())
    forged: dict[str, str] = {
        # Signed by a key the server does not hold, under the server's key id.
        "foreign key": jwt.encode(claims, attacker, algorithm="EdDSA", headers={"kid": "test-1"}),
        # Unsigned.
        "alg none": f"{header_none}.{_b64(json.dumps(claims).encode())}.",
        # HMAC keyed with the public key (algorithm confusion).
        "hs256 with the public key": jwt.encode(
            claims, public_raw, algorithm="HS256", headers={"kid": "test-1"}
        ),
        "unknown kid": jwt.encode(claims, server_key, algorithm="EdDSA", headers={"kid": "x"}),
        # Signed by the server's own key but expired a minute ago.
        "expired": ring.issue(user_id, family_id, timedelta(minutes=-1)),
        "claims changed after signing": ".".join(
            [
                genuine["accessToken"].split(".")[0],
                _b64(json.dumps({**claims, "sub": str(uuid.uuid4())}).encode()),
                genuine["accessToken"].split(".")[2],
            ]
        ),
        "garbage": "not.a.token",
        "a refresh token": genuine["refreshToken"],
    }
    path = f"/v1/tenants/{tenant.name}/api-keys"
    for what, token in forged.items():
        async with api_server.client(token) as http:
            response = await http.get(path)
        assert response.status_code == 401, (what, response.text)
        assert _error(response)["type"] == "authentication_error", what
        assert response.headers["www-authenticate"] == "Bearer"
    async with api_server.client() as http:
        missing = await http.get(path)
        assert missing.status_code == 401
        assert _error(missing)["code"] == "credentials_missing"
        basic = await http.get(path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401
    # The genuine token still works: what failed was the forgery, not the account.
    async with api_server.client(genuine["accessToken"]) as http:
        assert (await http.get(path)).status_code == 200


async def test_api_key_scopes_roles_and_revocation(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup, redis_url: str
) -> None:
    admin = (await sign_in(api_server, await make_user(db_pool, tenant, Role.ADMIN)))["accessToken"]
    key = await api_key(api_server, admin, tenant, ["domains:read", "campaigns:write"])
    assert key.startswith("pm_live_")
    base = f"/v1/tenants/{tenant.name}"
    async with api_server.client(key) as http:
        assert (await http.get(f"{base}/sending-domains")).status_code == 200
        assert (await http.get(f"{base}/campaigns")).status_code == 200  # write implies read
        refused = await http.get(f"{base}/smtp-servers")
        assert refused.status_code == 403
        assert _error(refused)["code"] == "scope_missing"
        write = await http.post(
            f"{base}/sending-domains",
            json={"name": "x.example.com", "spec": {"domain": "x.example.com"}},
        )
        assert write.status_code == 403, write.text
        # A key cannot mint keys.
        assert (await http.get(f"{base}/api-keys")).status_code == 403
    async with api_server.client(admin) as http:
        listed = (await http.get(f"{base}/api-keys")).json()["data"]
        (row,) = [k for k in listed if key.startswith(k["prefix"])]
        assert "key" not in row and key not in json.dumps(listed)
        assert row["lastUsedAt"] is not None
        bad_scope = await http.post(
            f"{base}/api-keys", json={"name": "x", "scopes": ["everything:write"]}
        )
        assert bad_scope.status_code == 400
        assert _error(bad_scope)["param"] == "scopes"
        # A new key is shown once: a retry with the same Idempotency-Key gets no copy of it,
        # and none is kept in Redis for replays.
        once = {"Idempotency-Key": "new-key-1"}
        made = await http.post(
            f"{base}/api-keys", json={"name": "ci", "scopes": ["domains:read"]}, headers=once
        )
        assert made.status_code == 201
        retried = await http.post(
            f"{base}/api-keys", json={"name": "ci", "scopes": ["domains:read"]}, headers=once
        )
        assert retried.status_code == 409
        assert _error(retried)["code"] == "idempotency_key_used"
        store = aioredis.from_url(redis_url)
        try:
            async for name in store.scan_iter("pm:api:*"):
                if await store.type(name) == b"string":
                    assert made.json()["key"] not in str(await store.get(name))
        finally:
            await store.aclose()
        assert (await http.delete(f"{base}/api-keys/{row['id']}")).status_code == 204
    async with api_server.client(key) as http:
        revoked = await http.get(f"{base}/sending-domains")
        assert revoked.status_code == 401
    # Roles: a viewer reads and cannot write; a member cannot manage keys.
    viewer = (await sign_in(api_server, await make_user(db_pool, tenant, Role.VIEWER)))[
        "accessToken"
    ]
    member = (await sign_in(api_server, await make_user(db_pool, tenant, Role.MEMBER)))[
        "accessToken"
    ]
    async with api_server.client(viewer) as http:
        assert (await http.get(f"{base}/campaigns")).status_code == 200
        denied = await http.delete(f"{base}/campaigns/anything")
        assert denied.status_code == 403
        assert "viewer" in str(_error(denied)["message"])
    async with api_server.client(member) as http:
        assert (await http.get(f"{base}/api-keys")).status_code == 403


async def test_api_keys_are_rate_limited_per_key(
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    db_pool: asyncpg.Pool,
    tenant: TenantSetup,
    tmp_path: Path,
) -> None:
    limit = 5  # a low allowance of this deployment: the path is the default's
    process, server = start_api(
        tmp_path,
        database_url=api_database_url,
        redis_url=redis_url,
        kubeconfig=api_kubeconfig,
        PM_API_KEY_REQUESTS_PER_MINUTE=str(limit),
    )
    try:
        admin = (await sign_in(server, await make_user(db_pool, tenant, Role.ADMIN)))["accessToken"]
        busy = await api_key(server, admin, tenant, ["campaigns:read"])
        other = await api_key(server, admin, tenant, ["campaigns:read"])
        path = f"/v1/tenants/{tenant.name}/campaigns"
        async with server.client(busy) as http:
            first = await http.get(path)
            assert first.status_code == 200
            if _rate(first)["reset"] < 10:  # too near the window's end to count within it
                await asyncio.sleep(_rate(first)["reset"] + 0.5)
                first = await http.get(path)
            assert first.headers["ratelimit-policy"] == f"{limit};w=60"
            remaining = [_rate(first)["remaining"]]
            for _ in range(limit - 1):
                response = await http.get(path)
                assert response.status_code == 200
                remaining.append(_rate(response)["remaining"])
            assert remaining == list(range(limit - 1, -1, -1))
            refused = await http.get(path)
            assert refused.status_code == 429, refused.text
            assert _error(refused)["code"] == "rate_limited"
            assert 0 < int(refused.headers["retry-after"]) <= 60
            assert int(refused.headers["retry-after"]) == _rate(refused)["reset"]
            assert _rate(refused)["remaining"] == 0
        # Another key of the same tenant has its own allowance.
        async with server.client(other) as http:
            assert (await http.get(path)).status_code == 200
    finally:
        stop_api(process)


def _rate(response: httpx.Response) -> dict[str, int]:
    fields = dict(part.strip().split("=") for part in response.headers["ratelimit"].split(","))
    return {name: int(value) for name, value in fields.items()}


async def test_a_suspended_tenant_is_read_only(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> None:
    suspended = await make_tenant(db_pool, core, "apisusp")
    owner = (await sign_in(api_server, await make_user(db_pool, suspended, Role.OWNER)))[
        "accessToken"
    ]
    # As the operator records a Tenant whose spec.suspended is set.
    await db_pool.execute("UPDATE tenants SET suspended = true WHERE id = $1", suspended.id)
    base = f"/v1/tenants/{suspended.name}"
    async with api_server.client(owner) as http:
        assert (await http.get(f"{base}/campaigns")).status_code == 200
        refused = await http.post(
            f"{base}/sending-domains",
            json={
                "name": "s",
                "spec": {"domain": "s.example.com", "dnsProvider": {"type": "manual"}},
            },
        )
        assert refused.status_code == 403, refused.text
        assert _error(refused)["code"] == "tenant_suspended"


async def test_create_user_command_makes_an_account_that_signs_in(
    api_server: ApiServer, api_database_url: str, tenant: TenantSetup
) -> None:
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    password = "a long enough password"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONSAFEPATH": "1",
        "PM_API_DATABASE_URL": api_database_url,  # the API's own login suffices
        "PM_API_NEW_PASSWORD": password,
    }
    command = [sys.executable, "-m", "penguinmails.api.http", "create-user", email]
    command += ["--tenant", tenant.name, "--role", "viewer"]
    created = await asyncio.to_thread(_run, command, env)
    assert created.returncode == 0, created.stderr
    assert password not in created.stdout + created.stderr
    again = await asyncio.to_thread(_run, command, env)
    assert again.returncode == 1 and "exists" in again.stderr
    tokens = await sign_in(api_server, email, password)
    async with api_server.client(tokens["accessToken"]) as http:
        me = (await http.get("/v1/me")).json()
    assert me["memberships"] == [{"tenant": tenant.name, "role": "viewer"}]


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
