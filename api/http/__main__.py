"""`penguinmails-api` / `python -m penguinmails.api.http`: serve the API with uvicorn.

python -m penguinmails.api.http [--host 0.0.0.0] [--port 8000]
python -m penguinmails.api.http new-signing-key [KID]   # an entry for PM_API_SIGNING_KEYS
python -m penguinmails.api.http openapi                 # the OpenAPI document, billing included
python -m penguinmails.api.http platform-admin EMAIL [--revoke]   # with the platform's DSN
python -m penguinmails.api.http import-contacts --tenant T --list L FILE  # the platform's DSN
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
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn

from penguinmails.api.commands.progress import ProgressBar
from penguinmails.common.db import accounts, tenant_connection
from penguinmails.common.db.accounts import Role
from penguinmails.common.db.contacts import ImportReport, import_contacts
from penguinmails.common.db.tenants import get_tenant
from penguinmails.common.settings import ApiSettings, api_database_url
from penguinmails.common.suppression import suppression_key

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
    if args and args[0] == "import-contacts":
        return _import_contacts(args[1:])
    parser = argparse.ArgumentParser(prog="penguinmails-api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = ApiSettings.from_env()
        app = create_app(settings)
    except ValueError as error:
        print(f"penguinmails-api: {error}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=options.host,
        port=options.port,
        log_level="info",
        # The client's address (rate limits, sign-in throttle, audit log) is the connection's
        # peer unless that peer is a configured proxy; never uvicorn's default of believing
        # X-Forwarded-For from 127.0.0.1 (or FORWARDED_ALLOW_IPS): a sidecar or a port
        # forward would let any client name its own address.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
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


def _import_contacts(args: list[str]) -> int:
    """The platform operator's import, straight into the database with the platform's login
    (PM_DATABASE_URL, PM_SUPPRESSION_KEY): for seeding a tenant (`make run`'s demo) without an
    account on the API. Customers import with `penguinmails contacts import`, over the API.
    The file is streamed; exit status 0 when every row was imported, 2 when rows were skipped
    (listed with their line numbers on stderr; a CSV syntax error such as a field over the csv
    module's limit also ends the import at its line, after the good rows before it), 1 when
    nothing could be done."""
    parser = argparse.ArgumentParser(prog="penguinmails-api import-contacts")
    parser.add_argument("--tenant", required=True, help="tenant name")
    parser.add_argument("--list", required=True, dest="list_name", help="contact list name")
    parser.add_argument("file", type=Path, help="CSV with a header row and an email column")
    options = parser.parse_args(args)
    dsn = os.environ.get("PM_DATABASE_URL", "")
    if not dsn:
        print("PM_DATABASE_URL is not set: point it at the platform database", file=sys.stderr)
        return 1
    try:
        report = asyncio.run(_import(dsn, options.tenant, options.list_name, options.file))
    except (OSError, ValueError, LookupError, asyncpg.PostgresError) as error:
        print(f"import failed: {error}", file=sys.stderr)
        return 1
    for row_error in report.errors:
        print(f"{options.file}: {row_error}", file=sys.stderr)
    print(f"imported {report.imported} contacts into {options.list_name}, skipped {report.skipped}")
    return 2 if report.errors else 0


async def _import(dsn: str, tenant: str, list_name: str, path: Path) -> ImportReport:
    key = suppression_key()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        row = await get_tenant(pool, tenant)
        if row is None or row.deleted:
            raise LookupError(f"no tenant named {tenant!r}: create the Tenant resource first")
        # Streamed: the file is read a chunk at a time (common.db.contacts), never whole.
        with path.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            bar = ProgressBar(sys.stderr, f"importing {path.name}")
            async with tenant_connection(pool, row.id) as conn:
                report = await import_contacts(
                    conn, list_name, source, key, progress=lambda _: bar(source.tell(), size)
                )
            bar.finish()
            return report
    finally:
        await pool.close()


if __name__ == "__main__":
    sys.exit(main())
