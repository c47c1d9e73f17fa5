"""API keys of a tenant: created by its admins, shown once, listed without the key, revoked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import Field, field_validator

from penguinmails.common.db import accounts

from ..auth import SCOPES, Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services

router = APIRouter(tags=["api-keys"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429)
}


class ApiKeyCreate(ApiModel):
    name: str = Field(min_length=1, max_length=100, description="What the key is for.")
    scopes: list[str] = Field(
        min_length=1,
        max_length=len(SCOPES),
        description=f"Rights of the key: any of {', '.join(SCOPES)} (write implies read).",
    )
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working; unset: never."
    )

    @field_validator("scopes")
    @classmethod
    def _known(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scope {unknown[0]!r}: use any of {', '.join(SCOPES)}")
        return scopes

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("give a time zone, e.g. 2027-01-01T00:00:00Z")
            if value <= datetime.now(UTC):
                raise ValueError("must be in the future")
        return value


class ApiKey(ApiModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The key itself: shown this once, store it now.")


def _out(row: accounts.ApiKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "last_used_at": row.last_used_at,
        "revoked_at": row.revoked_at,
    }


@router.post(
    "/tenants/{tenant}/api-keys", status_code=201, responses=_ERRORS, summary="Create an API key"
)
async def create_key(
    body: ApiKeyCreate,
    response: Response,
    access: Annotated[TenantAccess, tenant_access(Resource.API_KEYS, Access.WRITE)],
    svc: Annotated[Services, Depends(services)],
) -> ApiKeyCreated:
    row, key = await accounts.create_api_key(
        svc.pool,
        access.tenant.id,
        name=body.name,
        scopes=body.scopes,
        created_by=access.caller.user_id,
        expires_at=body.expires_at,
    )
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyCreated(**_out(row), key=key)


@router.get("/tenants/{tenant}/api-keys", responses=_ERRORS, summary="List API keys")
async def list_keys(
    access: Annotated[TenantAccess, tenant_access(Resource.API_KEYS, Access.READ)],
    page: Annotated[PageParams, Depends(page_params)],
    svc: Annotated[Services, Depends(services)],
) -> Page[ApiKey]:
    after: uuid.UUID | None = None
    if page.cursor:
        try:
            after = uuid.UUID(page.cursor)
        except ValueError as error:
            raise ApiError.invalid("Not a cursor of this list.", "cursor") from error
    rows = await accounts.list_api_keys(
        svc.pool, access.tenant.id, after=after, limit=page.limit + 1
    )
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return Page[ApiKey](
        data=[ApiKey(**_out(r)) for r in rows],
        has_more=more,
        next_cursor=str(rows[-1].id) if more else None,
    )


@router.delete(
    "/tenants/{tenant}/api-keys/{key_id}",
    status_code=204,
    responses=_ERRORS,
    summary="Revoke an API key",
)
async def revoke_key(
    key_id: uuid.UUID,
    access: Annotated[TenantAccess, tenant_access(Resource.API_KEYS, Access.WRITE)],
    svc: Annotated[Services, Depends(services)],
) -> Response:
    if not await accounts.revoke_api_key(svc.pool, access.tenant.id, key_id):
        raise ApiError.not_found("API key", "key_id")
    return Response(status_code=204)
