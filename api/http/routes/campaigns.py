"""Campaigns: create, edit (a JSON merge patch of the spec), pause, resume, delete, and their
live progress from the Campaign's status (phase, counts, progress, rates)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Response

from penguinmails.api.v1alpha1 import Campaign

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..services import Services, services
from .custom import ERRORS, IfMatch, ObjectMeta, ObjectName
from .resource_routes import ResourceRoutes, Summaries

routes = ResourceRoutes(
    Campaign,
    "campaigns",
    scope=Resource.CAMPAIGNS,
    noun="campaign",
    summaries=Summaries(
        list="List campaigns",
        create="Create a campaign",
        show="A campaign and its progress",
        edit="Edit a campaign (merge patch of its spec)",
        delete="Delete a campaign",
    ),
)
router = routes.router
_WRITE = tenant_access(Resource.CAMPAIGNS, Access.WRITE)


@router.post(
    routes.path + "/{name}/pause",
    responses=ERRORS,
    response_model=routes.out_model,
    response_model_exclude_none=True,
    summary="Pause a campaign (spec.paused: true)",
)
async def pause_campaign(
    name: ObjectName,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
    if_match: IfMatch = None,
) -> ObjectMeta:
    obj = await routes.change(svc, access, name, {"paused": True}, if_match)
    return routes.answer(response, obj)


@router.post(
    routes.path + "/{name}/resume",
    responses=ERRORS,
    response_model=routes.out_model,
    response_model_exclude_none=True,
    summary="Resume a paused campaign (spec.paused: false)",
)
async def resume_campaign(
    name: ObjectName,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Annotated[Services, Depends(services)],
    if_match: IfMatch = None,
) -> ObjectMeta:
    obj = await routes.change(svc, access, name, {"paused": False}, if_match)
    return routes.answer(response, obj)
