"""Contact imports: upload a CSV (`text/csv`, the body itself), follow the job, page through
the lines it skipped, list the tenant's imports (newest first).

The body is streamed to a temporary file as it arrives and refused with 413 as soon as it
passes the limit (`PM_API_IMPORT_MAX_BYTES`, or at once from its Content-Length); the import
itself runs in the background of this process (`api/http/import_runner.py`, which says what a
restart does to a running job). The CSV format is the CLI's (`common/db/contacts.py`): a header
row with an `email` column, every other column a contact field."""

from __future__ import annotations

import tempfile
import uuid
from datetime import datetime
from typing import Annotated, Any, BinaryIO, Literal, cast

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from penguinmails.common.db import contact_imports as jobs
from penguinmails.common.db import tenant_connection

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..import_runner import Busy, max_upload_bytes, runner_of
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services
from .contacts import LIST_NAME, hash_key


def _bad_cursor() -> ApiError:
    return ApiError.invalid("Not a cursor of this list: pass `nextCursor` unchanged.", "cursor")


router = APIRouter(tags=["contacts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 503)
}
_PATH = "/tenants/{tenant}/contact-imports"
CSV = "text/csv"

Reader = Annotated[TenantAccess, tenant_access(Resource.CONTACTS, Access.READ)]
Writer = Annotated[TenantAccess, tenant_access(Resource.CONTACTS, Access.WRITE)]
Svc = Annotated[Services, Depends(services)]


class ContactImport(ApiModel):
    id: uuid.UUID
    list_id: uuid.UUID
    list_name: str
    state: Literal["running", "succeeded", "failed"] = Field(
        description="running, then succeeded (the good rows are in the list) or failed "
        "(nothing of the file was imported: see `failure`)."
    )
    bytes_total: int = Field(description="The file's size.")
    bytes_done: int = Field(description="How much of the file was read.")
    rows_done: int = Field(description="Data rows read so far: imported or skipped.")
    rows_total: int | None = Field(description="Data rows in the file, once it was all read.")
    imported: int = Field(description="Contacts added to the list (when succeeded).")
    skipped: int = Field(description="Lines skipped (when succeeded): see `.../errors`.")
    failure: str | None = Field(description="Why it failed, and what to do.")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ImportLineError(ApiModel):
    line: int = Field(description="Line number in the file (the header is line 1).")
    field: str | None = Field(
        description="The column at fault (`email`), `header`, or null for the whole row."
    )
    message: str


def _busy() -> ApiError:
    return ApiError(
        429,
        "rate_limit_error",
        "imports_busy",
        "This server is running as many imports as it takes at once: retry shortly.",
        headers={"Retry-After": "5"},
    )


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "invalid_request_error",
        "file_too_large",
        f"The file is larger than the {limit} bytes one import takes: split it into several "
        "files and import each (rows already in the list are skipped).",
    )


async def _spool(request: Request, limit: int) -> tuple[BinaryIO, int]:
    """The body in an unnamed temporary file, read as it arrives; 413 past `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    # Handed to the runner, which closes it; unnamed on disk, so it goes with the process.
    spool = cast(BinaryIO, tempfile.TemporaryFile())  # noqa: SIM115
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            spool.write(chunk)
        if size == 0:
            raise ApiError.invalid(
                "The body is empty: send the CSV file itself (a header row with an email "
                "column, then one contact per line).",
                "body",
                "body_invalid",
            )
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool, size


@router.post(
    _PATH,
    status_code=202,
    responses={**_ERRORS, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}},
    summary="Import a CSV file into a contact list",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The CSV file: a header row with an `email` column (any case), "
            "every other column a contact field; UTF-8.",
            "content": {CSV: {"schema": {"type": "string"}}},
        }
    },
)
async def create_import(
    request: Request,
    access: Writer,
    svc: Svc,
    list_name: Annotated[
        str,
        Query(
            alias="list",
            pattern=LIST_NAME,
            description="The list to import into; created if the tenant has none of that name.",
        ),
    ],
) -> ContactImport:
    """Answers 202 with the job as soon as the file is received; the import runs in the
    background: follow it with `GET .../contact-imports/{id}`. Importing the same file again
    is harmless: addresses already in the list are skipped (and listed as such)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != CSV:
        raise ApiError(
            415,
            "invalid_request_error",
            "media_type_unsupported",
            f"Send the file as the body with `Content-Type: {CSV}` (got {media or 'none'}).",
            param="Content-Type",
        )
    key = hash_key()
    runner = runner_of(request.app)
    if runner.busy:  # before receiving the file, not after
        raise _busy()
    spool, size = await _spool(request, max_upload_bytes())
    try:
        job = await runner.start(svc.pool, access.tenant.id, list_name, spool, size, key)
    except Busy as error:
        raise _busy() from error
    return ContactImport.model_validate(job, from_attributes=True)


@router.get(_PATH, responses=_ERRORS, summary="List the tenant's imports, newest first")
async def list_imports(
    access: Reader, svc: Svc, page: Annotated[PageParams, Depends(page_params)]
) -> Page[ContactImport]:
    """Each with its state, progress (`bytesDone` of `bytesTotal`, `rowsDone`) and the number
    of lines it skipped (`skipped`: see `.../{id}/errors`)."""
    after = None
    if page.cursor is not None:
        after = jobs.decode_job_cursor(page.cursor)
        if after is None:
            raise _bad_cursor()
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        found, cursor = await jobs.list_jobs(conn, after=after, limit=page.limit)
    return Page[ContactImport](
        data=[ContactImport.model_validate(j, from_attributes=True) for j in found],
        has_more=cursor is not None,
        next_cursor=cursor,
    )


@router.get(_PATH + "/{import_id}", responses=_ERRORS, summary="Show an import's progress")
async def get_import(import_id: uuid.UUID, access: Reader, svc: Svc) -> ContactImport:
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        job = await jobs.get_job(conn, import_id)
    if job is None:
        raise ApiError.not_found("contact import", "import_id")
    return ContactImport.model_validate(job, from_attributes=True)


@router.get(
    _PATH + "/{import_id}/errors", responses=_ERRORS, summary="List the lines an import skipped"
)
async def list_import_errors(
    import_id: uuid.UUID,
    access: Reader,
    svc: Svc,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[ImportLineError]:
    """In line order; complete once the import succeeded."""
    after = 0
    if page.cursor is not None:
        decoded = jobs.decode_error_cursor(page.cursor)
        if decoded is None:
            raise _bad_cursor()
        after = decoded
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        if await jobs.get_job(conn, import_id) is None:
            raise ApiError.not_found("contact import", "import_id")
        rows, cursor = await jobs.list_errors(conn, import_id, after_line=after, limit=page.limit)
    return Page[ImportLineError](
        data=[ImportLineError(line=r.line, field=r.field, message=r.message) for r in rows],
        has_more=cursor is not None,
        next_cursor=cursor,
    )
