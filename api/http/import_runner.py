"""Contact imports in the background of the API process.

`POST .../contact-imports` spools the uploaded CSV to an unnamed temporary file (streamed, with
the size limit checked as it arrives), creates the job and answers 202 at once; a task of this
process then streams the file into `common.db.contacts.import_contacts` (COPY by chunks, in one
transaction of the tenant's scope) and records the outcome and the skipped lines in that same
transaction, so the job says `succeeded` exactly when its contacts are committed. Progress
(rows read, bytes read) is written after each chunk from another connection, so that it is
visible while the import's transaction is still open.

What a stop does: on a clean shutdown the app cancels the running imports, whose transactions
roll back and whose jobs are marked failed with the reason. When the process dies instead
(killed, out of memory, the node lost), nothing is written, but its database connections end,
which releases the job's advisory lock (`common.db.contact_imports`): the job is marked failed,
with the reason, the first time anyone reads it (PostgreSQL ends a dead client's session when
its backend next uses the socket: see docs/api.md for the server settings that bound this when
a machine vanishes). Either way nothing of that file was imported, and a job is not left
showing `running` once nobody runs it. The temporary file has no name on disk, so it goes with
the process too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import BinaryIO

import asyncpg
from fastapi import FastAPI

from penguinmails.common.db import contact_imports as jobs
from penguinmails.common.db import tenant_connection, tenant_scope
from penguinmails.common.db.contacts import ensure_list, import_contacts

__all__ = [
    "CHUNK_ROWS",
    "MAX_BYTES_ENV",
    "MAX_RUNNING",
    "STOPPED",
    "Busy",
    "ImportRunner",
    "max_upload_bytes",
    "runner_of",
]

log = logging.getLogger(__name__)

MAX_BYTES_ENV = "PM_API_IMPORT_MAX_BYTES"
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
CHUNK_ROWS = 1000
"""Contacts per COPY chunk, and so per progress update."""
MAX_RUNNING = 3
"""Imports one API process runs at once: each holds a connection of the pool (10) throughout."""

STOPPED = (
    "the API process was stopped before the import finished: nothing of this file was "
    "imported; upload it again"
)
BROKEN = "the import failed on our side: nothing of this file was imported; upload it again"
LIST_GONE = "the list was deleted during the import: nothing of this file was imported"


def max_upload_bytes() -> int:
    """The largest CSV accepted (PM_API_IMPORT_MAX_BYTES, default 100 MiB)."""
    raw = os.environ.get(MAX_BYTES_ENV, "")
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_BYTES_ENV}={raw!r} is not a positive number of bytes")
    return int(raw)


class Busy(Exception):  # noqa: N818 (a refusal, answered 429)
    """This process already runs MAX_RUNNING imports."""


@dataclass
class _Progress:
    rows: int = 0
    bytes: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ImportRunner:
    """The imports this process runs (one per app, `runner_of(app)`)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def busy(self) -> bool:
        """Whether `start` would refuse now (checked before an upload is received, too)."""
        return len(self._tasks) >= MAX_RUNNING

    async def start(
        self,
        pool: asyncpg.Pool,
        tenant_id: uuid.UUID,
        list_name: str,
        source: BinaryIO,
        size: int,
        key: bytes,
    ) -> jobs.ImportJob:
        """Create the job (and the list if missing) and start importing `source`, which the
        runner owns from now on (and closes)."""
        if self.busy:
            raise Busy
        job_id = uuid.uuid4()
        conn = await pool.acquire()
        try:
            # The lock first: from the moment the job row is visible, someone holds it.
            await jobs.hold_lock(conn, job_id)
            async with tenant_scope(conn, tenant_id):
                list_id = await ensure_list(conn, list_name)
                await jobs.create_job(conn, job_id, list_id, size)
                job = await jobs.get_job(conn, job_id, check_abandoned=False)
        except BaseException:
            await pool.release(conn)  # resetting the connection releases the lock
            source.close()
            raise
        assert job is not None
        task = asyncio.create_task(
            self._run(pool, conn, tenant_id, job_id, list_name, source, key),
            name=f"contact-import-{job_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def stop(self) -> None:
        """Cancel the running imports (each marks its job failed) and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(
        self,
        pool: asyncpg.Pool,
        conn: asyncpg.pool.PoolConnectionProxy,
        tenant_id: uuid.UUID,
        job_id: uuid.UUID,
        list_name: str,
        source: BinaryIO,
        key: bytes,
    ) -> None:
        progress = _Progress()

        def on_progress(rows: int) -> None:
            progress.rows, progress.bytes = rows, source.tell()
            progress.changed.set()

        reporter = asyncio.create_task(_report(pool, tenant_id, job_id, progress))
        failure: str | None = None
        try:
            async with tenant_scope(conn, tenant_id):
                report = await import_contacts(
                    conn, list_name, source, key, progress=on_progress, chunk_rows=CHUNK_ROWS
                )
                await jobs.finish_job(conn, job_id, report.imported, report.errors)
            log.info(
                "contact import %s: %d imported, %d skipped",
                job_id,
                report.imported,
                len(report.errors),
            )
        except asyncio.CancelledError:
            failure = STOPPED
            raise
        except asyncpg.ForeignKeyViolationError:
            failure = LIST_GONE
        except Exception:
            log.exception("contact import %s failed", job_id)
            failure = BROKEN
        finally:
            reporter.cancel()
            source.close()
            try:
                if failure is not None:
                    async with tenant_connection(pool, tenant_id) as other:
                        await jobs.fail_job(other, job_id, failure)
                await jobs.release_lock(conn, job_id)
            except Exception:
                # The lock goes with the connection's reset anyway; a reader marks the job.
                log.exception("contact import %s: could not record its end", job_id)
            finally:
                await pool.release(conn)


async def _report(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, job_id: uuid.UUID, progress: _Progress
) -> None:
    """Write the progress each time it changes (coalesced while a write is under way)."""
    while True:
        await progress.changed.wait()
        progress.changed.clear()
        try:
            async with tenant_connection(pool, tenant_id) as conn:
                await jobs.record_progress(conn, job_id, progress.rows, progress.bytes)
        except (OSError, asyncpg.PostgresError):
            log.warning("contact import %s: progress not recorded", job_id, exc_info=True)


def runner_of(app: FastAPI) -> ImportRunner:
    found = getattr(app.state, "import_runner", None)
    if found is None:
        found = app.state.import_runner = ImportRunner()
    assert isinstance(found, ImportRunner)
    return found
