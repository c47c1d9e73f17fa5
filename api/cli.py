"""The `penguinmails` command: the customer API's client, and operator-side tasks on the
platform database.

    penguinmails login                      # then: domains, servers, campaigns, keys, audit
    penguinmails campaigns create -f campaign.yaml
    penguinmails contacts import --tenant acme --list leads contacts.csv
    penguinmails unsubscribe serve --port 8088

The API commands (api/commands/, over the client in api/client/) need only a login; errors print
the API's message and the field it names, exit status 1. The operator-side commands read
`PM_DATABASE_URL` and `PM_SUPPRESSION_KEY`. The CSV file is streamed, never read whole.
Exit status: 0 when every row was imported, 2 when some rows were skipped (they are listed
with their line numbers on stderr; a CSV syntax error such as a field over the csv module's
limit also ends the import at its line, after the good rows before it), 1 when nothing could
be done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import asyncpg

from penguinmails.api.client import ApiError
from penguinmails.api.commands import account, admin, resources
from penguinmails.api.commands.context import CliError, common_options
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import ImportReport, import_contacts
from penguinmails.common.db.tenants import get_tenant
from penguinmails.common.suppression import suppression_key


class ProgressBar:
    """A one-line progress bar on a terminal; silent when stderr is not one."""

    def __init__(self, stream: TextIO, label: str, width: int = 30) -> None:
        self.stream = stream
        self.label = label
        self.width = width
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        filled = self.width * min(done, total) // total
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {100 * min(done, total) // total}%")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


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


def _run_api_command(args: argparse.Namespace) -> int:
    try:
        status: int = args.run(args)
    except (CliError, ApiError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="penguinmails", description="The customer API client and operator-side tasks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    for module in (account, resources, admin):
        module.add_commands(commands, common)
    # Operator-side, on the database. `contacts import` moves to the API's import endpoint once
    # it exists (a `contacts` module beside api/commands/resources.py); until then it stays here.
    contacts = commands.add_parser("contacts", help="contact lists").add_subparsers(
        dest="action", required=True
    )
    importing = contacts.add_parser("import", help="import a CSV file into a contact list")
    importing.add_argument("--tenant", required=True, help="tenant name")
    importing.add_argument("--list", required=True, dest="list_name", help="contact list name")
    importing.add_argument("file", type=Path, help="CSV with a header row and an email column")
    unsubscribe = commands.add_parser("unsubscribe", help="the unsubscribe endpoint")
    unsubscribe.add_subparsers(dest="action", required=True).add_parser(
        "serve", help="serve the unsubscribe endpoint"
    ).add_argument("--port", type=int, default=8088)
    args = parser.parse_args(argv)
    if hasattr(args, "run"):
        return _run_api_command(args)
    dsn = os.environ.get("PM_DATABASE_URL", "")
    if not dsn:
        print("PM_DATABASE_URL is not set: point it at the platform database", file=sys.stderr)
        return 1
    if args.command == "unsubscribe":
        from penguinmails.api.unsubscribe import serve

        asyncio.run(serve(dsn, port=args.port))
        return 0
    try:
        report = asyncio.run(_import(dsn, args.tenant, args.list_name, args.file))
    except (OSError, ValueError, LookupError, asyncpg.PostgresError) as error:
        print(f"import failed: {error}", file=sys.stderr)
        return 1
    for row_error in report.errors:
        print(f"{args.file}: {row_error}", file=sys.stderr)
    print(f"imported {report.imported} contacts into {args.list_name}, skipped {report.skipped}")
    return 2 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
