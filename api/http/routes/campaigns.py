"""Campaigns: create, edit (a JSON merge patch of the spec), pause, resume, delete, and their
live progress from the Campaign's status (phase, counts, progress, rates)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import Field, ValidationError

from penguinmails.api.v1alpha1 import Campaign, CampaignSpec, CampaignStatus

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services
from . import custom
from .custom import ERRORS, IfMatch, ObjectMeta, ObjectName

router = APIRouter(tags=["campaigns"])
_PATH = "/tenants/{tenant}/campaigns"


class CampaignCreate(ApiModel):
    name: str = Field(
        min_length=1, max_length=253, pattern=custom.NAME_PATTERN, description="Name of the object."
    )
    spec: CampaignSpec


class CampaignEdit(ApiModel):
    spec: dict[str, Any] = Field(
        description=(
            "A JSON merge patch (RFC 7386) of the spec: the fields to change, null to unset "
            "one. The result must be a valid spec."
        )
    )


class CampaignOut(ObjectMeta):
    spec: CampaignSpec
    status: CampaignStatus | None = None


def _out(obj: dict[str, Any]) -> CampaignOut:
    return CampaignOut(
        **custom.meta(obj).model_dump(),
        spec=CampaignSpec.model_validate(obj.get("spec") or {}),
        status=CampaignStatus.model_validate(obj["status"]) if obj.get("status") else None,
    )


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of `target` by `patch`."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


_READ = tenant_access(Resource.CAMPAIGNS, Access.READ)
_WRITE = tenant_access(Resource.CAMPAIGNS, Access.WRITE)


@router.get(_PATH, responses=ERRORS, response_model_exclude_none=True, summary="List campaigns")
async def list_campaigns(
    access: Annotated[TenantAccess, _READ],
    page: Annotated[PageParams, Depends(page_params)],
    svc: Annotated[Services, Depends(services)],
) -> Page[CampaignOut]:
    items, cont = await custom.list_page(svc, access, Campaign, page)
    return Page[CampaignOut](
        data=[_out(o) for o in items], has_more=cont is not None, next_cursor=cont
    )


@router.post(
    _PATH,
    status_code=201,
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="Create a campaign",
)
async def create_campaign(
    body: CampaignCreate,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
) -> CampaignOut:
    obj = await custom.create(svc, access, Campaign, body.name, custom.as_written(body.spec))
    custom.set_etag(response, obj)
    return _out(obj)


@router.get(
    _PATH + "/{name}",
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="A campaign and its progress",
)
async def get_campaign(
    name: ObjectName,
    response: Response,
    access: Annotated[TenantAccess, _READ],
    svc: Annotated[Services, Depends(services)],
) -> CampaignOut:
    obj = await custom.fetch(svc, access, Campaign, name)
    custom.set_etag(response, obj)
    return _out(obj)


async def _change(
    svc: Services,
    access: TenantAccess,
    name: str,
    spec_patch: dict[str, Any],
    if_match: str | None,
) -> dict[str, Any]:
    """Validate the patched spec here (errors name the field), then write it only if the
    object is still the version validated (or the one If-Match names)."""
    expected = custom.expected_version(if_match)
    current = await custom.fetch(svc, access, Campaign, name)
    version = str((current.get("metadata") or {}).get("resourceVersion", ""))
    if expected is not None and expected != version:
        raise ApiError(
            412,
            "precondition_failed_error",
            "etag_mismatch",
            f"Campaign {name!r} has changed since the ETag given in If-Match: fetch it again.",
            param="If-Match",
        )
    try:
        CampaignSpec.model_validate(merge(current.get("spec") or {}, spec_patch))
    except ValidationError as error:
        first = error.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        param = "spec" + (f".{loc}" if loc else "")
        raise ApiError.invalid(f"{param}: {first['msg']}", param) from error
    return await custom.merge_patch(
        svc, access, Campaign, name, spec_patch, based_on=version, if_match=expected is not None
    )


@router.patch(
    _PATH + "/{name}",
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="Edit a campaign (merge patch of its spec)",
)
async def edit_campaign(
    name: ObjectName,
    body: CampaignEdit,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
    if_match: IfMatch = None,
) -> CampaignOut:
    obj = await _change(svc, access, name, body.spec, if_match)
    custom.set_etag(response, obj)
    return _out(obj)


@router.post(
    _PATH + "/{name}/pause",
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="Pause a campaign (spec.paused: true)",
)
async def pause_campaign(
    name: ObjectName,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
    if_match: IfMatch = None,
) -> CampaignOut:
    obj = await _change(svc, access, name, {"paused": True}, if_match)
    custom.set_etag(response, obj)
    return _out(obj)


@router.post(
    _PATH + "/{name}/resume",
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="Resume a paused campaign (spec.paused: false)",
)
async def resume_campaign(
    name: ObjectName,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
    if_match: IfMatch = None,
) -> CampaignOut:
    obj = await _change(svc, access, name, {"paused": False}, if_match)
    custom.set_etag(response, obj)
    return _out(obj)


@router.delete(_PATH + "/{name}", status_code=204, responses=ERRORS, summary="Delete a campaign")
async def delete_campaign(
    name: ObjectName,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
    if_match: IfMatch = None,
) -> Response:
    await custom.delete(svc, access, Campaign, name, if_match)
    return Response(status_code=204)
