"""A tenant's outbound webhooks, for its owners and admins: endpoints (created with a secret
shown once, listed, changed, deleted, their secret rotated), each endpoint's deliveries with
their attempts, and a manual redelivery.

Everything runs in the tenant's scope (`tenant_connection()`) through `common/webhooks.py`,
which checks URLs against the egress policy (`PM_EGRESS_ALLOW`, `PM_CLUSTER_CIDRS`) and records
the audit entries itself. Another tenant's endpoint or delivery is a 404, like one that does
not exist (row-level security does not show it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import Field

from penguinmails.common import webhooks
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context
from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy
from penguinmails.common.webhooks import EventType, WebhookError

from ..audit import context_of
from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params

router = APIRouter(tags=["webhooks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429)
}
_PATH = "/tenants/{tenant}/webhook-endpoints"
_WIRE_NAMES = {"event_types": "eventTypes"}


class EndpointCreate(ApiModel):
    url: str = Field(max_length=2048, description="Where events are POSTed (http or https).")
    event_types: list[EventType] = Field(min_length=1, description="The events it receives.")
    description: str | None = Field(default=None, max_length=500)


class EndpointUpdate(ApiModel):
    url: str | None = Field(default=None, max_length=2048)
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(default=None, description="false: no new events, deliveries wait.")


class WebhookEndpoint(ApiModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None = None
    enabled: bool
    created_at: datetime


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(description="The signing secret (`whsec_...`): shown this once.")


class WebhookSecret(ApiModel):
    secret: str = Field(description="The new signing secret: shown this once. The old one "
                        "keeps signing beside it for 24 hours.")  # fmt: skip


class WebhookAttempt(ApiModel):
    attempt: int
    at: datetime
    status_code: int | None = None
    latency_ms: int
    response: str | None = None
    error: str | None = None


class WebhookDelivery(ApiModel):
    id: int
    event_id: str
    event_type: str
    state: str = Field(description="pending, succeeded or failed.")
    next_attempt_at: datetime
    created_at: datetime
    attempts: list[WebhookAttempt]


def _out(endpoint: webhooks.Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "created_at": endpoint.created_at,
    }


@asynccontextmanager
async def _scope(request: Request, access: TenantAccess) -> AsyncIterator[tuple[Any, Context]]:
    """The tenant's connection and the audit context; bad input becomes a 400 naming the
    field. The library records its own audit entries, so the middleware does not."""
    request.state.audited = True
    try:
        async with tenant_connection(request.app.state.services.pool, access.tenant.id) as conn:
            yield conn, context_of(request, access)
    except (WebhookError, DestinationNotAllowedError) as error:
        raise ApiError.invalid(error.message, _WIRE_NAMES.get(error.field, error.field)) from error


Admin = Annotated[TenantAccess, tenant_access(Resource.WEBHOOKS, Access.WRITE)]
Reader = Annotated[TenantAccess, tenant_access(Resource.WEBHOOKS, Access.READ)]


@router.post(_PATH, status_code=201, responses=_ERRORS, summary="Create a webhook endpoint")
async def create_endpoint(
    body: EndpointCreate, request: Request, response: Response, access: Admin
) -> WebhookEndpointCreated:
    async with _scope(request, access) as (conn, context):
        endpoint, secret = await webhooks.create_endpoint(
            conn,
            context,
            body.url,
            [e.value for e in body.event_types],
            policy=EgressPolicy.from_env(),
            description=body.description,
        )
    response.headers["Cache-Control"] = "no-store"
    return WebhookEndpointCreated(**_out(endpoint), secret=secret)


@router.get(_PATH, responses=_ERRORS, summary="List webhook endpoints")
async def list_endpoints(
    request: Request, access: Reader, page: Annotated[PageParams, Depends(page_params)]
) -> Page[WebhookEndpoint]:
    async with _scope(request, access) as (conn, _):
        found = await webhooks.list_endpoints(conn)
    start = 0
    if page.cursor is not None:
        ids = [str(e.id) for e in found]
        if page.cursor not in ids:
            raise ApiError.invalid("Not a cursor of this list.", "cursor")
        start = ids.index(page.cursor) + 1
    chunk = found[start : start + page.limit]
    more = start + page.limit < len(found)
    return Page[WebhookEndpoint](
        data=[WebhookEndpoint(**_out(e)) for e in chunk],
        has_more=more,
        next_cursor=str(chunk[-1].id) if more else None,
    )


@router.get(_PATH + "/{endpoint_id}", responses=_ERRORS, summary="Show a webhook endpoint")
async def get_endpoint(endpoint_id: uuid.UUID, request: Request, access: Reader) -> WebhookEndpoint:
    async with _scope(request, access) as (conn, _):
        found = [e for e in await webhooks.list_endpoints(conn) if e.id == endpoint_id]
    if not found:
        raise ApiError.not_found("webhook endpoint", "endpoint_id")
    return WebhookEndpoint(**_out(found[0]))


@router.patch(_PATH + "/{endpoint_id}", responses=_ERRORS, summary="Change a webhook endpoint")
async def update_endpoint(
    endpoint_id: uuid.UUID, body: EndpointUpdate, request: Request, access: Admin
) -> WebhookEndpoint:
    async with _scope(request, access) as (conn, context):
        endpoint = await webhooks.update_endpoint(
            conn,
            context,
            endpoint_id,
            policy=EgressPolicy.from_env(),
            url=body.url,
            event_types=[e.value for e in body.event_types] if body.event_types else None,
            description=body.description,
            enabled=body.enabled,
        )
    if endpoint is None:
        raise ApiError.not_found("webhook endpoint", "endpoint_id")
    return WebhookEndpoint(**_out(endpoint))


@router.delete(
    _PATH + "/{endpoint_id}", status_code=204, responses=_ERRORS, summary="Delete an endpoint"
)
async def delete_endpoint(endpoint_id: uuid.UUID, request: Request, access: Admin) -> Response:
    async with _scope(request, access) as (conn, context):
        gone = await webhooks.delete_endpoint(conn, context, endpoint_id)
    if not gone:
        raise ApiError.not_found("webhook endpoint", "endpoint_id")
    return Response(status_code=204)


@router.post(_PATH + "/{endpoint_id}/rotate-secret", responses=_ERRORS, summary="Rotate the secret")
async def rotate_secret(
    endpoint_id: uuid.UUID, request: Request, response: Response, access: Admin
) -> WebhookSecret:
    async with _scope(request, access) as (conn, context):
        secret = await webhooks.rotate_secret(conn, context, endpoint_id)
    if secret is None:
        raise ApiError.not_found("webhook endpoint", "endpoint_id")
    response.headers["Cache-Control"] = "no-store"
    return WebhookSecret(secret=secret)


@router.get(
    _PATH + "/{endpoint_id}/deliveries", responses=_ERRORS, summary="List an endpoint's deliveries"
)
async def list_deliveries(
    endpoint_id: uuid.UUID,
    request: Request,
    access: Reader,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[WebhookDelivery]:
    before: int | None = None
    if page.cursor is not None:
        if not page.cursor.isdigit() or len(page.cursor) > 18:
            raise ApiError.invalid("Not a cursor of this list.", "cursor")
        before = int(page.cursor)
    async with _scope(request, access) as (conn, _):
        if not any(e.id == endpoint_id for e in await webhooks.list_endpoints(conn)):
            raise ApiError.not_found("webhook endpoint", "endpoint_id")
        rows = await webhooks.list_deliveries(
            conn, endpoint_id, limit=page.limit + 1, before=before
        )
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return Page[WebhookDelivery](
        data=[
            WebhookDelivery(
                id=d.id,
                event_id=d.event_id,
                event_type=d.event_type,
                state=d.state,
                next_attempt_at=d.next_attempt_at,
                created_at=d.created_at,
                attempts=[WebhookAttempt.model_validate(a) for a in d.attempts],
            )
            for d in rows
        ],
        has_more=more,
        next_cursor=str(rows[-1].id) if more else None,
    )


@router.post(
    "/tenants/{tenant}/webhook-deliveries/{delivery_id}/redeliver",
    status_code=202,
    responses=_ERRORS,
    summary="Send a delivery again",
)
async def redeliver(
    delivery_id: Annotated[int, Path(ge=1, le=2**62)], request: Request, access: Admin
) -> Response:
    """A finished delivery gets one more attempt (same `webhook-id`); a pending one is sent now."""
    async with _scope(request, access) as (conn, context):
        if not await webhooks.redeliver(conn, context, delivery_id):
            raise ApiError.not_found("webhook delivery", "delivery_id")
    return Response(status_code=202)
