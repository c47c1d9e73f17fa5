"""The API's rate limits (api/http/ratelimit.py) against the API as its own process (uvicorn)
and Redis: per source address (signed in or not; `X-Forwarded-For` believed only from a
configured proxy), and per API key and per sign-in at the rate of the tenant's tier.

Clients come from loopback addresses of their own (127.0.0.0/8 is all loopback), so each test
has fresh source addresses. Every expected count is derived from the limits this module
configures and the tier table, never a constant of the test."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.api.http.ratelimit import WINDOW_SECONDS
from penguinmails.api.v1alpha1.tiers import Tier, limits_for
from penguinmails.common.db import accounts
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
    own_redis_database,
    sign_in,
)

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

SOURCE_LIMIT = 40
"""This deployment's requests per address and minute (low, so a test can exhaust it)."""
KEY_RATE = 3
"""This deployment's starter rate per API key or sign-in; other tiers get a multiple."""
PROXY = "127.0.9.1"
"""The one proxy this deployment trusts."""
JWKS = "/v1/.well-known/jwks.json"
"""An operation anyone may call: the per-source limit covers unauthenticated calls too."""


@pytest.fixture(scope="module")
def api_env(redis_url: str) -> dict[str, str]:
    # Its own Redis database: the counts of loopback addresses must not meet other modules'.
    return {
        "PM_REDIS_URL": own_redis_database(redis_url, 5),
        "PM_API_SOURCE_REQUESTS_PER_MINUTE": str(SOURCE_LIMIT),
        "PM_API_KEY_REQUESTS_PER_MINUTE": str(KEY_RATE),
        "PM_API_TRUSTED_PROXIES": PROXY,
    }


def _from(api: ApiServer, address: str, token: str | None = None) -> httpx.AsyncClient:
    """A client whose connections come from `address` (a loopback address of its own)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=api.url, transport=transport, headers=headers, timeout=30.0)


def _rate(response: httpx.Response) -> dict[str, int]:
    fields = dict(part.strip().split("=") for part in response.headers["ratelimit"].split(","))
    return {name: int(value) for name, value in fields.items()}


async def _fresh_window() -> None:
    """Wait, if need be, for a window with time enough to spend a whole allowance in it (a
    window's edge would reset the counts midway)."""
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < 20:
        await asyncio.sleep(left + 0.5)


async def _until_refused(
    http: httpx.AsyncClient, path: str, *, cap: int, headers: dict[str, str] | None = None
) -> tuple[list[httpx.Response], httpx.Response]:
    """The answers served before the first 429, and the 429 itself; at most `cap` served."""
    served: list[httpx.Response] = []
    for _ in range(cap + 1):
        response = await http.get(path, headers=headers)
        if response.status_code == 429:
            return served, response
        assert response.status_code == 200, response.text
        served.append(response)
    raise AssertionError(f"{len(served)} requests to {path} served, none refused")


def _assert_refusal(refused: httpx.Response, limit: int, who: str) -> None:
    body = refused.json()["error"]
    assert body["code"] == "rate_limited", body
    assert body["message"].startswith(who), body
    assert refused.headers["ratelimit-policy"] == f"{limit};w={WINDOW_SECONDS}"
    assert _rate(refused)["remaining"] == 0
    assert 0 < int(refused.headers["retry-after"]) <= WINDOW_SECONDS
    assert int(refused.headers["retry-after"]) == _rate(refused)["reset"]
    assert refused.headers["x-request-id"]


async def test_an_address_over_its_limit_is_refused_while_another_is_served(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> None:
    tenant = await make_tenant(db_pool, core, "rlsrc", Tier.ENTERPRISE.value)
    owner = (await sign_in(api_server, await make_user(db_pool, tenant, Role.OWNER)))["accessToken"]
    busy, other = "127.0.8.1", "127.0.8.2"
    async with _from(api_server, busy) as http:
        await _fresh_window()
        served, refused = await _until_refused(http, JWKS, cap=SOURCE_LIMIT)
    # Unauthenticated: exactly the address's allowance, counted down to 0, then 429.
    assert len(served) == SOURCE_LIMIT
    assert [_rate(r)["remaining"] for r in served] == list(range(SOURCE_LIMIT - 1, -1, -1))
    assert {r.headers["ratelimit-policy"] for r in served} == {f"{SOURCE_LIMIT};w=60"}
    _assert_refusal(refused, SOURCE_LIMIT, "This address")
    # Signed in, from the same address, in a tenant whose own allowance is untouched: refused
    # too (the address's limit comes first); the health probe is not an API call.
    async with _from(api_server, busy, owner) as http:
        signed_in = await http.get(f"/v1/tenants/{tenant.name}/campaigns")
        _assert_refusal(signed_in, SOURCE_LIMIT, "This address")
        assert (await http.get("/healthz")).status_code == 200
    # Another address is served, signed in or not.
    async with _from(api_server, other) as http:
        assert (await http.get(JWKS)).status_code == 200
    async with _from(api_server, other, owner) as http:
        answer = await http.get(f"/v1/tenants/{tenant.name}/campaigns")
        assert answer.status_code == 200, answer.text
    print(
        f"\nper address: {len(served)} served of {SOURCE_LIMIT}, then 429 with "
        f"retry-after {refused.headers['retry-after']}s; another address served"
    )


async def test_x_forwarded_for_is_believed_only_from_the_trusted_proxy(
    api_server: ApiServer,
) -> None:
    client_a, client_b = "203.0.113.7", "203.0.113.8"  # names in headers only, never dialled
    async with _from(api_server, PROXY) as proxy:
        await _fresh_window()
        served, refused = await _until_refused(
            proxy, JWKS, cap=SOURCE_LIMIT, headers={"X-Forwarded-For": client_a}
        )
        assert len(served) == SOURCE_LIMIT
        _assert_refusal(refused, SOURCE_LIMIT, "This address")
        # The proxy's next client has its own allowance: the proxy itself is not the client.
        other = await proxy.get(JWKS, headers={"X-Forwarded-For": client_b})
        assert other.status_code == 200 and _rate(other)["remaining"] == SOURCE_LIMIT - 1
        # A client that prepends a forged address gets nothing from it: the nearest untrusted
        # address (the one the proxy appended) is the client.
        forged = await proxy.get(JWKS, headers={"X-Forwarded-For": f"198.51.100.1, {client_a}"})
        assert forged.status_code == 429
    # From an address that is not a proxy the header is ignored: naming the exhausted client
    # does not refuse it, and a new name on every request buys no allowance.
    async with _from(api_server, "127.0.9.2") as direct:
        named = await direct.get(JWKS, headers={"X-Forwarded-For": client_a})
        assert named.status_code == 200 and _rate(named)["remaining"] == SOURCE_LIMIT - 1
    async with _from(api_server, "127.0.9.3") as rotating:
        served = []
        for i in range(SOURCE_LIMIT + 1):
            answer = await rotating.get(JWKS, headers={"X-Forwarded-For": f"198.51.100.{i + 2}"})
            if answer.status_code == 429:
                break
            served.append(answer)
        assert len(served) == SOURCE_LIMIT and answer.status_code == 429


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tiered(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> tuple[dict[Tier, TenantSetup], dict[Tier, str], str]:
    """A starter and an enterprise tenant, an API key of each, and one user (the e-mail
    address), owner of both."""
    tenants = {
        tier: await make_tenant(db_pool, core, f"rl{tier.value[:5]}", tier.value)
        for tier in (Tier.STARTER, Tier.ENTERPRISE)
    }
    email = await make_user(db_pool, tenants[Tier.STARTER], Role.OWNER)
    user_id = await db_pool.fetchval("SELECT id FROM users WHERE email = $1", email)
    await accounts.add_membership(db_pool, tenants[Tier.ENTERPRISE].id, user_id, Role.OWNER)
    token = (await sign_in(api_server, email))["accessToken"]
    keys = {
        tier: await api_key(api_server, token, tenant, ["campaigns:read"])
        for tier, tenant in tenants.items()
    }
    return tenants, keys, email


async def test_api_keys_get_their_tiers_rate(
    api_server: ApiServer, tiered: tuple[dict[Tier, TenantSetup], dict[Tier, str], str]
) -> None:
    tenants, keys, _ = tiered
    expected = {tier: KEY_RATE * limits_for(tier).api_rate_factor for tier in tenants}
    assert expected[Tier.ENTERPRISE] > expected[Tier.STARTER]
    assert max(expected.values()) < SOURCE_LIMIT  # the key's limit is the one that binds
    got = {}
    for index, tier in enumerate(tenants):
        path = f"/v1/tenants/{tenants[tier].name}/campaigns"
        async with _from(api_server, f"127.0.10.{index + 1}", keys[tier]) as http:
            await _fresh_window()
            served, refused = await _until_refused(http, path, cap=expected[tier])
        got[tier] = len(served)
        policy = f"{expected[tier]};w=60"
        assert {r.headers["ratelimit-policy"] for r in served} == {policy}
        _assert_refusal(refused, expected[tier], "This API key")
    assert got == expected
    print(f"\nper API key: {', '.join(f'{t.value} {n}/min' for t, n in got.items())}")


async def test_a_sign_in_gets_each_tenants_tier_rate(
    api_server: ApiServer, tiered: tuple[dict[Tier, TenantSetup], dict[Tier, str], str]
) -> None:
    tenants, _, email = tiered
    expected = {tier: KEY_RATE * limits_for(tier).api_rate_factor for tier in tenants}
    token = (await sign_in(api_server, email))["accessToken"]  # a sign-in nothing counted yet
    got = {}
    # One sign-in, one address: its allowance in one tenant is not spent by the other's.
    async with _from(api_server, "127.0.11.1", token) as http:
        await _fresh_window()
        for tier in (Tier.STARTER, Tier.ENTERPRISE):
            path = f"/v1/tenants/{tenants[tier].name}/campaigns"
            served, refused = await _until_refused(http, path, cap=expected[tier])
            got[tier] = len(served)
            assert {r.headers["ratelimit-policy"] for r in served} == {f"{expected[tier]};w=60"}
            _assert_refusal(refused, expected[tier], "This sign-in")
        # Calls outside a tenant are counted by address only.
        assert (await http.get("/v1/me")).status_code == 200
    assert got == expected
    print(f"\nper sign-in and tenant: {', '.join(f'{t.value} {n}/min' for t, n in got.items())}")
