"""`penguinmails-api` / `python -m penguinmails.api.http`: serve the API with uvicorn.

python -m penguinmails.api.http [--host 0.0.0.0] [--port 8000]
python -m penguinmails.api.http new-signing-key [KID]   # an entry for PM_API_SIGNING_KEYS
python -m penguinmails.api.http openapi                 # the OpenAPI document, billing included
python -m penguinmails.api.http platform-admin EMAIL [--revoke]   # with the platform's DSN
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import asyncpg
import uvicorn

from penguinmails.common.db import accounts
from penguinmails.common.db.accounts import Role
from penguinmails.common.settings import ApiSettings, api_database_url

from .app import create_app
from .tokens import new_signing_key


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "new-signing-key":
        print(new_signing_key(args[1] if len(args) > 1 else datetime.now(UTC).strftime("%Y-%m")))
        return 0
    if args and args[0] == "create-user":
        return _create_user(args[1:])
    if args and args[0] == "openapi":
        print(json.dumps(openapi_document(), indent=2, sort_keys=True))
        return 0
    if args and args[0] == "platform-admin":
        return _platform_admin(args[1:])
    parser = argparse.ArgumentParser(prog="penguinmails-api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        app = create_app(ApiSettings.from_env())
    except ValueError as error:
        print(f"penguinmails-api: {error}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=options.host,
        port=options.port,
        log_level="info",
        proxy_headers=True,
        server_header=False,
    )
    return 0


def openapi_document() -> dict[str, Any]:
    """The document /v1/openapi.json serves, with every optional module on, made without a
    database or cluster (nothing connects before the app starts): the dashboard's types are
    generated from it (`make web-types`)."""
    settings = ApiSettings(
        database_url="postgresql://unused",
        redis_url="redis://unused",
        signing_keys=new_signing_key("openapi"),
    )
    document: dict[str, Any] = create_app(settings, billing_on=True).openapi()
    return document


def _create_user(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="penguinmails-api create-user")
    parser.add_argument("email")
    parser.add_argument("--tenant", help="make the user a member of this tenant")
    parser.add_argument("--role", default="owner", choices=[r.value for r in Role])
    options = parser.parse_args(args)
    try:
        dsn = api_database_url()
    except ValueError as error:
        print(f"penguinmails-api: {error}", file=sys.stderr)
        return 2
    password = os.environ.get("PM_API_NEW_PASSWORD") or getpass.getpass("password: ")
    if len(password) < 12:
        print("penguinmails-api: the password needs at least 12 characters", file=sys.stderr)
        return 2

    async def create() -> str | None:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            tenant = None
            if options.tenant:
                tenant = await accounts.tenant_by_name(pool, options.tenant)
                if tenant is None:
                    return f"no live tenant {options.tenant!r}"
            user_id = await accounts.create_user(pool, options.email, password)
            if tenant is not None:
                await accounts.add_membership(pool, tenant.id, user_id, Role(options.role))
            return None
        except asyncpg.UniqueViolationError:
            return f"a user with the address {options.email} exists"
        finally:
            await pool.close()

    problem = asyncio.run(create())
    if problem:
        print(f"penguinmails-api: {problem}", file=sys.stderr)
        return 1
    member = f" ({options.role} of {options.tenant})" if options.tenant else ""
    print(f"created {options.email}{member}")
    return 0


def _platform_admin(args: list[str]) -> int:
    """Make (or with --revoke, unmake) a user a platform administrator. Only the platform's
    own login (PM_DATABASE_URL, the schema's owner) may: the API's login cannot (migration
    0010), so no request to the API can make an administrator."""
    parser = argparse.ArgumentParser(prog="penguinmails-api platform-admin")
    parser.add_argument("email")
    parser.add_argument("--revoke", action="store_true", help="take the right away")
    options = parser.parse_args(args)
    dsn = os.environ.get("PM_DATABASE_URL", "")
    if not dsn:
        print(
            "penguinmails-api: set PM_DATABASE_URL to the platform's login (the API's cannot "
            "make administrators)",
            file=sys.stderr,
        )
        return 2

    async def flag() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            status = await conn.execute(
                "UPDATE users SET platform_admin = $2 WHERE lower(email) = lower($1)",
                options.email.strip(),
                not options.revoke,
            )
        finally:
            await conn.close()
        return int(status.split()[-1])

    try:
        changed = asyncio.run(flag())
    except asyncpg.InsufficientPrivilegeError:
        print(
            "penguinmails-api: this login may not change platform_admin: use the platform's",
            file=sys.stderr,
        )
        return 1
    if not changed:
        print(f"penguinmails-api: no user {options.email}", file=sys.stderr)
        return 1
    what = "no longer a platform administrator" if options.revoke else "a platform administrator"
    print(f"{options.email} is {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
