"""Apply the SQL migrations in `penguinmails.common.db.migrations` to a database.

    applied = await migrate(dsn)            # names applied by this call, [] when up to date
    python -m penguinmails.common.db.migrate [DSN]     # DSN defaults to $PM_DATABASE_URL

Each file `NNNN_name.sql` runs in its own transaction, together with the row recording it in
`schema_migrations` (name, sha256 of the file, time), so a file is applied completely or not at
all. Every transaction first takes `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)`: replicas starting
at the same moment queue up behind each other and each skips what another has just applied.
A recorded migration whose file has changed since is an error (write a new migration instead);
recorded names this code does not know (applied by a newer release) are left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.resources
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

__all__ = [
    "MIGRATIONS_PACKAGE",
    "MIGRATION_LOCK_KEY",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "load_migrations",
    "main",
    "migrate",
]

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "penguinmails.common.db.migrations"
# Key of the advisory lock serializing migrations (per database): "pmigrate" in ASCII.
MIGRATION_LOCK_KEY = 0x706D696772617465

_FILE_NAME = re.compile(r"^(?P<number>\d{4})_(?P<title>[a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migrations on disk and in the database disagree, or a file is malformed."""


@dataclass(frozen=True)
class Migration:
    """One migration: `name` is the file name without `.sql`, e.g. `0001_initial`."""

    name: str
    sql: str

    @property
    def number(self) -> int:
        return int(self.name[:4])

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str = MIGRATIONS_PACKAGE) -> list[Migration]:
    """The migrations shipped in `package`, ordered by number; malformed names are errors."""
    migrations: list[Migration] = []
    for entry in importlib.resources.files(package).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        sql = entry.read_text(encoding="utf-8")
        if not sql.strip():
            raise MigrationError(f"migration file {entry.name!r} is empty")
        migrations.append(Migration(name=entry.name.removesuffix(".sql"), sql=sql))
    migrations.sort(key=lambda m: m.number)
    _check_order(migrations)
    return migrations


def _check_order(migrations: Sequence[Migration]) -> None:
    seen: dict[int, str] = {}
    for migration in migrations:
        if not _FILE_NAME.match(migration.name + ".sql"):
            raise MigrationError(f"migration name {migration.name!r} is not NNNN_name")
        if migration.number in seen:
            raise MigrationError(
                f"migrations {seen[migration.number]} and {migration.name} share a number"
            )
        seen[migration.number] = migration.name
    if [m.number for m in migrations] != sorted(seen):
        raise MigrationError("migrations are not in ascending order")


async def migrate(dsn: str, *, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply pending migrations to the database at `dsn`; return the names applied by this call.

    Safe to run from several processes at once and any number of times.
    """
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn, migrations=migrations)
    finally:
        await conn.close()


async def apply_migrations(
    conn: asyncpg.Connection, *, migrations: Sequence[Migration] | None = None
) -> list[str]:
    """`migrate()` on an open connection (which must not be inside a transaction)."""
    if conn.is_in_transaction():
        raise MigrationError("apply_migrations() needs a connection outside a transaction")
    wanted = list(migrations) if migrations is not None else load_migrations()
    _check_order(wanted)

    async with conn.transaction():
        applied = await _lock_and_read(conn)
    _verify_checksums(wanted, applied)
    unknown = sorted(set(applied) - {m.name for m in wanted})
    if unknown:
        log.info("database has migrations this release does not know: %s", ", ".join(unknown))

    done: list[str] = []
    for migration in wanted:
        if migration.name in applied:
            continue
        async with conn.transaction():
            # Another replica may have applied it while we waited for the lock.
            applied = await _lock_and_read(conn)
            if migration.name in applied:
                _verify_checksums([migration], applied)
                continue
            log.info("applying migration %s", migration.name)
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                migration.name,
                migration.checksum,
            )
        done.append(migration.name)
    return done


async def _lock_and_read(conn: asyncpg.Connection) -> dict[str, str]:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        # The first run on this database: replicas queue on an advisory lock. Any login may
        # take an advisory lock, but before the first migration no tenant has a login.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
    # From then on a lock on the table itself: a tenant's login could hold the advisory lock
    # forever and keep the operator from starting, but may not lock a table it cannot write.
    await conn.execute("LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE")
    rows = await conn.fetch("SELECT name, checksum FROM schema_migrations")
    return {row["name"]: row["checksum"] for row in rows}


def _verify_checksums(wanted: Sequence[Migration], applied: dict[str, str]) -> None:
    changed = [m.name for m in wanted if m.name in applied and applied[m.name] != m.checksum]
    if changed:
        raise MigrationError(
            "applied migrations were edited afterwards (add a new migration instead): "
            + ", ".join(changed)
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m penguinmails.common.db.migrate",
        description="Apply the PenguinMails database migrations.",
    )
    parser.add_argument(
        "dsn",
        nargs="?",
        default=os.environ.get("PM_DATABASE_URL"),
        help="postgresql://... (default: $PM_DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("no DSN given and PM_DATABASE_URL is not set")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        applied = asyncio.run(migrate(args.dsn))
    except (MigrationError, OSError, asyncpg.PostgresError) as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
