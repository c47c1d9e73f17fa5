"""SMTP servers: list, show (provisioning and probe results from the SmtpServer's status),
create, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from penguinmails.api.v1alpha1 import SmtpServer, SmtpServerSpec, SmtpServerStatus

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services
from . import custom
from .custom import ERRORS, IfMatch, ObjectMeta, ObjectName

router = APIRouter(tags=["smtp-servers"])
_PATH = "/tenants/{tenant}/smtp-servers"


class SmtpServerCreate(ApiModel):
    name: str = Field(
        min_length=1, max_length=253, pattern=custom.NAME_PATTERN, description="Name of the object."
    )
    spec: SmtpServerSpec


class SmtpServerOut(ObjectMeta):
    spec: SmtpServerSpec
    status: SmtpServerStatus | None = None


def _out(obj: dict[str, Any]) -> SmtpServerOut:
    return SmtpServerOut(
        **custom.meta(obj).model_dump(),
        spec=SmtpServerSpec.model_validate(obj.get("spec") or {}),
        status=SmtpServerStatus.model_validate(obj["status"]) if obj.get("status") else None,
    )


_READ = tenant_access(Resource.SMTP_SERVERS, Access.READ)
_WRITE = tenant_access(Resource.SMTP_SERVERS, Access.WRITE)


@router.get(_PATH, responses=ERRORS, response_model_exclude_none=True, summary="List SMTP servers")
async def list_servers(
    access: Annotated[TenantAccess, _READ],
    page: Annotated[PageParams, Depends(page_params)],
    svc: Annotated[Services, Depends(services)],
) -> Page[SmtpServerOut]:
    items, cont = await custom.list_page(svc, access, SmtpServer, page)
    return Page[SmtpServerOut](
        data=[_out(o) for o in items], has_more=cont is not None, next_cursor=cont
    )


@router.post(
    _PATH,
    status_code=201,
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="Create an SMTP server",
)
async def create_server(
    body: SmtpServerCreate,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
) -> SmtpServerOut:
    obj = await custom.create(svc, access, SmtpServer, body.name, custom.as_written(body.spec))
    custom.set_etag(response, obj)
    return _out(obj)


@router.get(
    _PATH + "/{name}",
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="An SMTP server and its state",
)
async def get_server(
    name: ObjectName,
    response: Response,
    access: Annotated[TenantAccess, _READ],
    svc: Annotated[Services, Depends(services)],
) -> SmtpServerOut:
    obj = await custom.fetch(svc, access, SmtpServer, name)
    custom.set_etag(response, obj)
    return _out(obj)


@router.delete(
    _PATH + "/{name}", status_code=204, responses=ERRORS, summary="Delete an SMTP server"
)
async def delete_server(
    name: ObjectName,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
    if_match: IfMatch = None,
) -> Response:
    await custom.delete(svc, access, SmtpServer, name, if_match)
    return Response(status_code=204)
