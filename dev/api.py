"""The customer HTTP API as its own process on loopback, for `make run` and the tests.

    with ApiProcess(base_dir, env={"PM_API_DATABASE_URL": ..., "PM_REDIS_URL": ...,
                                   "PM_API_SIGNING_KEYS": ..., "PM_KUBECONFIG": ...}) as api:
        httpx.get(api.url + "/v1/openapi.json")

`python -m penguinmails.api.http` (uvicorn) with exactly the environment given (plus
PYTHONSAFEPATH and PATH), ready once `/healthz` answers 200, that is once its database answers.

`api_login(dsn)` gives it what production gives it: its own PostgreSQL login, a member of
`penguinmails_api` (accounts) and of `penguinmails_app` / `penguinmails_platform`, so that
`tenant_connection()` can act for one tenant under row-level security (audit log, GDPR,
webhooks); never a superuser, owner of nothing (created with the platform's login after the
migrations). `billing_login(dsn)` gives its billing code the narrow login production gives it
(a member of `penguinmails_billing` only).
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import httpx

from penguinmails.common.db.migrate import migrate
from penguinmails.common.db.tenant_logins import scram_verifier, with_login
from penguinmails.devstack.process import PrivateService

__all__ = ["ApiError", "ApiProcess", "api_login", "billing_login"]


async def api_login(platform_dsn: str, role: str | None = None) -> str:
    """The DSN of a LOGIN role that is a member of penguinmails_api, penguinmails_app and
    penguinmails_platform only (a new password each call); the migrations are applied first,
    since they create those groups."""
    groups = ("penguinmails_api", "penguinmails_app", "penguinmails_platform")
    return await _login(platform_dsn, role or f"pm_api_{secrets.token_hex(4)}", groups)


async def billing_login(platform_dsn: str, role: str | None = None) -> str:
    """The DSN of a LOGIN role in penguinmails_billing only, the API's billing code's
    (PM_BILLING_DATABASE_URL; migration 0011): the billing tables and nothing else."""
    groups = ("penguinmails_billing",)
    return await _login(platform_dsn, role or f"pm_billing_{secrets.token_hex(4)}", groups)


async def _login(platform_dsn: str, role: str, groups: tuple[str, ...]) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"{role!r} is not a plain role name")
    password = secrets.token_urlsafe(24)
    await migrate(platform_dsn)
    conn = await asyncpg.connect(platform_dsn)
    try:
        exists = await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", role
        )
        # A SCRAM verifier, never the password, reaches the server (and its statement log).
        verb = "ALTER" if exists else "CREATE"
        await conn.execute(f"{verb} ROLE {role} LOGIN PASSWORD '{scram_verifier(password)}'")
        await conn.execute(f"GRANT {', '.join(groups)} TO {role}")
    finally:
        await conn.close()
    return with_login(platform_dsn, role, password)


class ApiError(RuntimeError):
    """The local API could not be started or stopped."""


class ApiProcess(PrivateService):
    display_name = "penguinmails-api"
    error = ApiError
    bind_failure = re.compile(r"(?i)address already in use")
    poll_interval = 0.1

    def __init__(
        self,
        base_dir: Path,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        root = Path(base_dir).absolute() / "api"
        super().__init__(root, root / "api.log", port=port, start_timeout=start_timeout)
        self._given_env = dict(env)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _command(self, port: int) -> list[str]:
        module = "penguinmails.api.http"
        return [sys.executable, "-m", module, "--host", self.host, "--port", str(port)]

    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "PYTHONSAFEPATH": "1", **self._given_env}

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
