"""Multi-factor authentication and sign-in throttling, against the API running as its own
process on PostgreSQL and Redis: TOTP enrollment with codes computed from the secret at the
right time step, two-step sign-in, wrong, replayed and expired codes refused, recovery codes
good once, disabling with a code, a tenant requiring MFA, and the throttle's policy (N failures
per account and address; the right password still works from another address)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.api.http.throttle import ACCOUNT_FACTOR, SOURCE_FACTOR
from penguinmails.common import totp
from penguinmails.common.db.accounts import Role
from penguinmails.common.settings import ApiSettings
from tests.integration.api_stack import (
    PASSWORD,
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    api_server,
    make_tenant,
    make_user,
    own_redis_database,
    sign_in,
)

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

N = ApiSettings.sign_in_failures
"""The throttle's policy: failures per account and source address within the window."""


@pytest.fixture(scope="module")
def api_env(redis_url: str) -> dict[str, str]:
    # Its own Redis database: this module's failed sign-ins must not throttle other modules'.
    return {
        "PM_REDIS_URL": own_redis_database(redis_url, 3),
        "PM_SUPPRESSION_KEY": "mfa-master-key-0123456789abcdef0123",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(db_pool: asyncpg.Pool, core: client.CoreV1Api) -> TenantSetup:
    return await make_tenant(db_pool, core, "apimfa")


class Authenticator:
    """An authenticator app: the secret, and the codes it shows (each step used once)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.used: set[int] = set()

    async def code(self) -> str:
        """A code of a step newer than any used (this step or the next, which the server's
        drift window accepts), waiting for the next step when both were used."""
        while True:
            now = time.time()
            step = totp.step_of(now)
            for candidate in (step, step + 1):
                if candidate > max(self.used, default=-1):
                    self.used.add(candidate)
                    return totp.code_at(self.secret, candidate * totp.STEP_SECONDS)
            await asyncio.sleep(totp.STEP_SECONDS - now % totp.STEP_SECONDS + 0.2)

    def expired(self) -> str:
        """The code of three steps ago: outside the window, and unlike every code in it."""
        step = totp.step_of(time.time())
        live = {totp.code_at(self.secret, s * 30) for s in range(step - 2, step + 3)}
        for back in range(3, 30):
            old = totp.code_at(self.secret, (step - back) * totp.STEP_SECONDS)
            if old not in live:
                return old
        raise AssertionError("no distinct expired code")


def _code(response: httpx.Response) -> Any:
    return response.json()["error"]["code"]


async def _enroll(http: httpx.AsyncClient) -> tuple[Authenticator, list[str]]:
    enrolled = await http.post("/v1/me/mfa/enroll")
    assert enrolled.status_code == 201, enrolled.text
    app = Authenticator(enrolled.json()["secret"])
    confirmed = await http.post("/v1/me/mfa/confirm", json={"code": await app.code()})
    assert confirmed.status_code == 200, confirmed.text
    codes: list[str] = confirmed.json()["recoveryCodes"]
    return app, codes


async def _mfa_token(api: ApiServer, email: str) -> str:
    first = await sign_in(api, email)
    assert first["mfaRequired"] is True and "accessToken" not in first, first
    token: str = first["mfaToken"]
    return token


async def test_totp_enrollment_two_step_sign_in_and_recovery_codes(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup
) -> None:
    email = await make_user(db_pool, tenant, Role.MEMBER)
    tokens = await sign_in(api_server, email)
    async with api_server.client(tokens["accessToken"]) as http:
        assert (await http.get("/v1/me/mfa")).json() == {
            "enabled": False,
            "pending": False,
            "recoveryCodesLeft": 0,
        }
        enrolled = await http.post("/v1/me/mfa/enroll")
        assert enrolled.status_code == 201, enrolled.text
        assert enrolled.headers["cache-control"] == "no-store"
        secret = enrolled.json()["secret"]
        assert f"secret={secret}" in enrolled.json()["otpauthUri"]
        assert enrolled.json()["otpauthUri"].startswith("otpauth://totp/PenguinMails:")
        app = Authenticator(secret)
        # Not on until confirmed: sign-in still answers tokens.
        assert "accessToken" in await sign_in(api_server, email)
        wrong = await http.post("/v1/me/mfa/confirm", json={"code": app.expired()})
        assert wrong.status_code == 400 and _code(wrong) == "mfa_code_invalid", wrong.text
        first_code = await app.code()
        confirmed = await http.post("/v1/me/mfa/confirm", json={"code": first_code})
        assert confirmed.status_code == 200, confirmed.text
        recovery = confirmed.json()["recoveryCodes"]
        assert len(recovery) == len(set(recovery)) == 10
        status = (await http.get("/v1/me/mfa")).json()
        assert status == {"enabled": True, "pending": False, "recoveryCodesLeft": 10}
        again = await http.post("/v1/me/mfa/enroll")
        assert again.status_code == 409 and _code(again) == "mfa_enabled"

    # At rest: neither the secret nor a recovery code appears in the database.
    row = await db_pool.fetchrow(
        "SELECT m.secret_encrypted, m.key_id FROM user_mfa m JOIN users u ON u.id = m.user_id "
        "WHERE u.email = $1",
        email,
    )
    assert row is not None and row["key_id"] == 1
    blob = bytes(row["secret_encrypted"])
    assert secret.encode() not in blob and totp._key(secret) not in blob
    hashes = await db_pool.fetch(
        "SELECT c.code_hash FROM mfa_recovery_codes c JOIN users u ON u.id = c.user_id "
        "WHERE u.email = $1",
        email,
    )
    assert len(hashes) == 10
    assert not any(code.encode() in bytes(h["code_hash"]) for h in hashes for code in recovery)

    async with api_server.client() as http:
        # The password alone now answers a challenge, not tokens.
        challenge = await _mfa_token(api_server, email)
        refusals: dict[str, int] = {}
        for label, code in (
            ("replayed", first_code),  # the confirmation's code, used once already
            ("expired", app.expired()),
            ("malformed", "12ab56"),
        ):
            answer = await http.post("/v1/auth/mfa", json={"mfaToken": challenge, "code": code})
            assert answer.status_code == 401, (label, answer.text)
            assert _code(answer) == "mfa_code_invalid", label
            refusals[label] = answer.status_code
        fresh = await app.code()
        done = await http.post("/v1/auth/mfa", json={"mfaToken": challenge, "code": fresh})
        assert done.status_code == 200, done.text
        assert done.headers["cache-control"] == "no-store"
        # The challenge is used up; the same fresh code is refused on a new challenge.
        reused = await http.post("/v1/auth/mfa", json={"mfaToken": challenge, "code": fresh})
        assert reused.status_code == 401 and _code(reused) == "mfa_token_invalid"
        second = await _mfa_token(api_server, email)
        replay = await http.post("/v1/auth/mfa", json={"mfaToken": second, "code": fresh})
        assert replay.status_code == 401 and _code(replay) == "mfa_code_invalid"
        # A recovery code works once (whatever its case and dashes), then never again.
        use = recovery[3].upper().replace("-", " ")
        recovered = await http.post("/v1/auth/mfa", json={"mfaToken": second, "recoveryCode": use})
        assert recovered.status_code == 200, recovered.text
        third = await _mfa_token(api_server, email)
        spent = await http.post(
            "/v1/auth/mfa", json={"mfaToken": third, "recoveryCode": recovery[3]}
        )
        assert spent.status_code == 401 and _code(spent) == "mfa_code_invalid"
        both = await http.post(
            "/v1/auth/mfa", json={"mfaToken": third, "code": "123456", "recoveryCode": "x" * 10}
        )
        assert both.status_code == 400
    print(f"\nmfa: refused {refusals} and a reused code, challenge and recovery code")

    access = done.json()["accessToken"]
    async with api_server.client(access) as http:
        listed = await http.get(f"/v1/tenants/{tenant.name}/campaigns")
        assert listed.status_code == 200, listed.text
        assert (await http.get("/v1/me/mfa")).json()["recoveryCodesLeft"] == 9
        # Disabling needs a code: a wrong one is refused, a fresh one turns MFA off.
        refused = await http.post("/v1/me/mfa/disable", json={"code": app.expired()})
        assert refused.status_code == 400 and _code(refused) == "mfa_code_invalid"
        off = await http.post("/v1/me/mfa/disable", json={"code": await app.code()})
        assert off.status_code == 204, off.text
    assert "accessToken" in await sign_in(api_server, email)
    user_id = await db_pool.fetchval("SELECT id FROM users WHERE email = $1", email)
    actions = [
        r["action"]
        for r in await db_pool.fetch(
            "SELECT action FROM platform_audit_log WHERE target = $1 ORDER BY id",
            f"user:{user_id}",
        )
    ]
    assert actions == ["mfa.enroll", "mfa.confirm", "mfa.recovery_code_use", "mfa.disable"]


async def test_a_tenant_requiring_mfa_opens_only_to_sign_ins_with_a_second_factor(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> None:
    strict = await make_tenant(db_pool, core, "apimfa-req")
    owner = await make_user(db_pool, strict, Role.OWNER)
    member = await make_user(db_pool, strict, Role.MEMBER)
    owner_tokens = await sign_in(api_server, owner)
    path = f"/v1/tenants/{strict.name}"
    async with api_server.client(owner_tokens["accessToken"]) as http:
        assert (await http.get(f"{path}/security")).json() == {"mfaRequired": False}
        # Requiring it without a second factor of one's own would lock the owner out.
        early = await http.patch(f"{path}/security", json={"mfaRequired": True})
        assert early.status_code == 403 and _code(early) == "mfa_required", early.text
        await _enroll(http)  # confirming in this sign-in proves the factor for it
        on = await http.patch(f"{path}/security", json={"mfaRequired": True})
        assert on.status_code == 200 and on.json() == {"mfaRequired": True}, on.text
        assert (await http.get(f"{path}/campaigns")).status_code == 200

    member_tokens = await sign_in(api_server, member)
    older_session = await sign_in(api_server, member)
    async with api_server.client(member_tokens["accessToken"]) as http:
        blocked = await http.get(f"{path}/campaigns")
        assert blocked.status_code == 403, blocked.text
        assert _code(blocked) == "mfa_required"
        assert "/v1/me/mfa/enroll" in blocked.json()["error"]["message"]
        app, _ = await _enroll(http)
        assert (await http.get(f"{path}/campaigns")).status_code == 200
    async with api_server.client(older_session["accessToken"]) as http:
        # A sign-in made before the enrollment proved no second factor.
        assert _code(await http.get(f"{path}/campaigns")) == "mfa_required"
    async with api_server.client() as http:
        challenge = await _mfa_token(api_server, member)
        done = await http.post(
            "/v1/auth/mfa", json={"mfaToken": challenge, "code": await app.code()}
        )
        assert done.status_code == 200, done.text
    async with api_server.client(done.json()["accessToken"]) as http:
        assert (await http.get(f"{path}/campaigns")).status_code == 200
    entries = await db_pool.fetch(
        "SELECT action FROM audit_log WHERE tenant_id = $1 AND action = 'security.update'",
        strict.id,
    )
    assert len(entries) == 1


def _from(api: ApiServer, address: str) -> httpx.AsyncClient:
    """A client whose connections come from `address` (a loopback address of its own)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=api.url, transport=transport, timeout=30.0)


async def _try(http: httpx.AsyncClient, email: str, password: str) -> int:
    answer = await http.post("/v1/auth/token", json={"email": email, "password": password})
    return answer.status_code


async def test_guessing_is_throttled_without_locking_the_owner_out(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup
) -> None:
    email = await make_user(db_pool, tenant, Role.VIEWER)
    window = int(ApiSettings.sign_in_window.total_seconds())
    async with _from(api_server, "127.0.4.1") as attacker:
        statuses = [await _try(attacker, email, f"guess-{i}") for i in range(N)]
        assert statuses == [401] * N
        blocked = await attacker.post("/v1/auth/token", json={"email": email, "password": PASSWORD})
        assert blocked.status_code == 429, blocked.text
        assert _code(blocked) == "sign_in_throttled"
        retry = int(blocked.headers["retry-after"])
        assert 0 < retry <= window
    # The owner, from their own address, still gets in.
    async with _from(api_server, "127.0.0.2") as owner:
        assert await _try(owner, email, PASSWORD) == 200

    # Guessing spread over addresses: 10 N failures on the account block every address that
    # failed on it; a new address gets one guess; the owner's clean address still gets in.
    spread = await make_user(db_pool, tenant, Role.VIEWER)
    guesses = 0
    for host in range(ACCOUNT_FACTOR):
        async with _from(api_server, f"127.0.1.{host + 1}") as bot:
            for i in range(N):
                assert await _try(bot, spread, f"bot-{host}-{i}") == 401
                guesses += 1
    async with _from(api_server, "127.0.1.1") as bot:
        assert await _try(bot, spread, PASSWORD) == 429
    async with _from(api_server, "127.0.2.1") as newcomer:
        assert await _try(newcomer, spread, "one-more-guess") == 401
        assert await _try(newcomer, spread, PASSWORD) == 429
    async with _from(api_server, "127.0.0.3") as owner:
        assert await _try(owner, spread, PASSWORD) == 200

    # One address guessing across accounts: 4 N failures, then that address is refused.
    async with _from(api_server, "127.0.3.1") as sprayer:
        sprayed = [
            await _try(sprayer, f"nobody-{i}@example.com", "password1") for i in range(N * 4)
        ]
        assert sprayed == [401] * (N * SOURCE_FACTOR)
        assert await _try(sprayer, email, PASSWORD) == 429
    print(
        f"\nthrottle: N={N} per account and address, {N * SOURCE_FACTOR} per address, "
        f"{N * ACCOUNT_FACTOR} per account ({guesses} spread guesses), window {window}s, "
        f"retry-after {retry}s"
    )
