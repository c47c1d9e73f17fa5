"""Contact import jobs (migration 0009): an uploaded CSV's progress, outcome and skipped lines.

A job is `running` while an API process imports it, then `succeeded` (the good rows are in the
list, the skipped lines listed) or `failed` (nothing of it was imported: the import is one
transaction). The process running a job holds a PostgreSQL advisory lock on it for as long as
it runs, on the connection that imports (`hold_lock`), taken before the job row exists. When
that process dies, its connections end and PostgreSQL releases the lock; a `running` job whose
lock is free is therefore one nobody is importing any more, and `get_job` marks it failed (with
the reason) the first time it is read. No timer decides it: a slow import is never declared
dead, and a crashed one is never shown as running.

Every function runs inside the caller's tenant scope (`tenant_connection()`), except the lock
calls, which take a plain connection (the lock is the session's, outside any transaction).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from penguinmails.common.db import AnyConnection
from penguinmails.common.db.contacts import RowError

__all__ = [
    "ABANDONED",
    "ImportErrorRow",
    "ImportJob",
    "create_job",
    "decode_error_cursor",
    "decode_job_cursor",
    "encode_error_cursor",
    "fail_job",
    "finish_job",
    "get_job",
    "hold_lock",
    "list_errors",
    "list_jobs",
    "record_progress",
    "release_lock",
]

_LOCK_CLASS = 0x504D4349  # "PMCI": the first key of every import job's advisory lock
_LOCK = "$1::int, hashtext($2::uuid::text)"
ABANDONED = (
    "the import was interrupted (the API process running it stopped) before it finished: "
    "nothing of this file was imported; upload it again"
)

_FROM = """
    SELECT i.id, l.name AS list_name, i.list_id, i.state, i.bytes_total, i.bytes_done,
           i.rows_done, i.rows_total, i.imported, i.skipped, i.failure, i.created_at,
           i.updated_at, i.finished_at
    FROM contact_imports i JOIN contact_lists l ON l.id = i.list_id
"""
_SELECT = _FROM + "WHERE i.id = $1"


@dataclass(frozen=True)
class ImportJob:
    id: uuid.UUID
    list_id: uuid.UUID
    list_name: str
    state: str
    bytes_total: int
    bytes_done: int
    rows_done: int
    rows_total: int | None
    imported: int
    skipped: int
    failure: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ImportErrorRow:
    line: int
    field: str | None
    message: str


async def hold_lock(conn: AnyConnection, job_id: uuid.UUID) -> None:
    """Take the job's lock for the session of `conn` (before the job row is written)."""
    await conn.execute(f"SELECT pg_advisory_lock({_LOCK})", _LOCK_CLASS, job_id)


async def release_lock(conn: AnyConnection, job_id: uuid.UUID) -> None:
    await conn.execute(f"SELECT pg_advisory_unlock({_LOCK})", _LOCK_CLASS, job_id)


async def create_job(
    conn: AnyConnection, job_id: uuid.UUID, list_id: uuid.UUID, bytes_total: int
) -> None:
    await conn.execute(
        "INSERT INTO contact_imports (id, list_id, bytes_total) VALUES ($1, $2, $3)",
        job_id,
        list_id,
        bytes_total,
    )


async def record_progress(
    conn: AnyConnection, job_id: uuid.UUID, rows_done: int, bytes_done: int
) -> None:
    await conn.execute(
        "UPDATE contact_imports SET rows_done = $2, bytes_done = LEAST($3, bytes_total) "
        "WHERE id = $1 AND state = 'running'",
        job_id,
        rows_done,
        bytes_done,
    )


async def finish_job(
    conn: AnyConnection, job_id: uuid.UUID, imported: int, errors: Sequence[RowError]
) -> None:
    """Record the outcome and the skipped lines; in the import's own transaction, so that the
    job says succeeded exactly when its rows are committed."""
    rows = imported + sum(1 for e in errors if e.field != "header")
    # One statement for all lines (COPY FROM is refused on tables under row-level security).
    await conn.execute(
        "INSERT INTO contact_import_errors (import_id, line, field, message) "
        "SELECT $1, * FROM unnest($2::integer[], $3::text[], $4::text[])",
        job_id,
        [e.line for e in errors],
        [e.field for e in errors],
        [e.reason[:1000] for e in errors],
    )
    await conn.execute(
        """
        UPDATE contact_imports
        SET state = 'succeeded', imported = $2, skipped = $3, rows_done = $4, rows_total = $4,
            bytes_done = bytes_total, finished_at = now()
        WHERE id = $1
        """,
        job_id,
        imported,
        len(errors),
        rows,
    )


async def fail_job(conn: AnyConnection, job_id: uuid.UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE contact_imports SET state = 'failed', failure = $2, finished_at = now() "
        "WHERE id = $1 AND state = 'running'",
        job_id,
        reason[:1000],
    )


async def get_job(
    conn: AnyConnection, job_id: uuid.UUID, *, check_abandoned: bool = True
) -> ImportJob | None:
    """The job, or None when the tenant has none of that id. A running job nobody holds the
    lock of is marked failed first (see the module doc); not on the session holding the lock
    (`check_abandoned=False`), to which its own lock is always free."""
    row = await conn.fetchrow(
        _SELECT,
        job_id,
    )
    if row is None:
        return None
    if (
        check_abandoned
        and row["state"] == "running"
        and await conn.fetchval(
            # A transaction-level try: released when the reader's transaction ends.
            f"SELECT pg_try_advisory_xact_lock({_LOCK})",
            _LOCK_CLASS,
            job_id,
        )
    ):
        await fail_job(conn, job_id, ABANDONED)
        return await get_job(conn, job_id)
    return ImportJob(**dict(row))


_ERROR_CURSOR = "ie1."


def encode_error_cursor(line: int) -> str:
    return _ERROR_CURSOR + base64.urlsafe_b64encode(str(line).encode()).decode().rstrip("=")


def decode_error_cursor(cursor: str) -> int | None:
    """The line after which a page starts; None for anything that is not such a cursor."""
    if not cursor.startswith(_ERROR_CURSOR) or len(cursor) > 40:
        return None
    raw = cursor[len(_ERROR_CURSOR) :]
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text) if text.isdigit() and len(text) <= 10 else None


async def list_errors(
    conn: AnyConnection, job_id: uuid.UUID, *, after_line: int, limit: int
) -> tuple[list[ImportErrorRow], str | None]:
    """A page of the job's skipped lines in line order, and the cursor of the next (or None)."""
    rows = await conn.fetch(
        "SELECT line, field, message FROM contact_import_errors "
        "WHERE import_id = $1 AND line > $2 ORDER BY line LIMIT $3",
        job_id,
        after_line,
        limit + 1,
    )
    found = [ImportErrorRow(r["line"], r["field"], r["message"]) for r in rows[:limit]]
    return found, encode_error_cursor(found[-1].line) if len(rows) > limit else None


_JOB_CURSOR = "ij1."


def _encode_job_cursor(job: ImportJob) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return _JOB_CURSOR + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_job_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    """(created_at, id) of the job after which a page starts; None for anything that is not
    such a cursor."""
    if not cursor.startswith(_JOB_CURSOR) or len(cursor) > 120:
        return None
    raw = cursor[len(_JOB_CURSOR) :]
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        when, _, job_id = text.partition("|")
        created_at = datetime.fromisoformat(when)
        if created_at.tzinfo is None:
            return None
        return created_at, uuid.UUID(job_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


async def list_jobs(
    conn: AnyConnection, *, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> tuple[list[ImportJob], str | None]:
    """A page of the tenant's imports, newest first, and the cursor of the next (or None).
    Running jobs are read through `get_job`, so an abandoned one is shown failed."""
    args: list[Any] = []
    where = ""
    if after is not None:
        where = "WHERE (i.created_at, i.id) < ($1, $2) "
        args = [after[0], after[1]]
    rows = await conn.fetch(
        f"{_FROM} {where}ORDER BY i.created_at DESC, i.id DESC LIMIT ${len(args) + 1}",
        *args,
        limit + 1,
    )
    found = []
    for row in rows[:limit]:
        job = ImportJob(**dict(row))
        if job.state == "running":
            job = await get_job(conn, job.id) or job
        found.append(job)
    return found, _encode_job_cursor(found[-1]) if len(rows) > limit else None
