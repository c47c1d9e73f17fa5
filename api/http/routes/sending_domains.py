"""Sending domains: create one, see the records to publish and their verification (from the
SendingDomain's status, as the operator observed them), delete it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from penguinmails.api.v1alpha1 import SendingDomain, SendingDomainSpec, SendingDomainStatus

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services
from . import custom
from .custom import ERRORS, IfMatch, ObjectMeta, ObjectName

router = APIRouter(tags=["sending-domains"])
_PATH = "/tenants/{tenant}/sending-domains"


class SendingDomainCreate(ApiModel):
    name: str = Field(
        min_length=1, max_length=253, pattern=custom.NAME_PATTERN, description="Name of the object."
    )
    spec: SendingDomainSpec


class SendingDomainOut(ObjectMeta):
    spec: SendingDomainSpec
    status: SendingDomainStatus | None = None


def _out(obj: dict[str, Any]) -> SendingDomainOut:
    return SendingDomainOut(
        **custom.meta(obj).model_dump(),
        spec=SendingDomainSpec.model_validate(obj.get("spec") or {}),
        status=SendingDomainStatus.model_validate(obj["status"]) if obj.get("status") else None,
    )


_READ = tenant_access(Resource.DOMAINS, Access.READ)
_WRITE = tenant_access(Resource.DOMAINS, Access.WRITE)


@router.get(_PATH, responses=ERRORS, response_model_exclude_none=True, summary="List domains")
async def list_domains(
    access: Annotated[TenantAccess, _READ],
    page: Annotated[PageParams, Depends(page_params)],
    svc: Annotated[Services, Depends(services)],
) -> Page[SendingDomainOut]:
    items, cont = await custom.list_page(svc, access, SendingDomain, page)
    return Page[SendingDomainOut](
        data=[_out(o) for o in items], has_more=cont is not None, next_cursor=cont
    )


@router.post(
    _PATH,
    status_code=201,
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="Create a sending domain",
)
async def create_domain(
    body: SendingDomainCreate,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
) -> SendingDomainOut:
    obj = await custom.create(svc, access, SendingDomain, body.name, custom.as_written(body.spec))
    custom.set_etag(response, obj)
    return _out(obj)


@router.get(
    _PATH + "/{name}",
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="A sending domain, its records and their verification",
)
async def get_domain(
    name: ObjectName,
    response: Response,
    access: Annotated[TenantAccess, _READ],
    svc: Annotated[Services, Depends(services)],
) -> SendingDomainOut:
    obj = await custom.fetch(svc, access, SendingDomain, name)
    custom.set_etag(response, obj)
    return _out(obj)


@router.delete(
    _PATH + "/{name}", status_code=204, responses=ERRORS, summary="Delete a sending domain"
)
async def delete_domain(
    name: ObjectName,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
    if_match: IfMatch = None,
) -> Response:
    await custom.delete(svc, access, SendingDomain, name, if_match)
    return Response(status_code=204)
