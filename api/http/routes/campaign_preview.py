"""A campaign's message previewed for a sample contact before it is created: its subject and
bodies rendered by the sender's own renderer (`sender/render.py`'s `Templates`: the same
sandbox, limits and footer every sent message gets), so what the preview shows is what the
contact will read. Nothing is written; a template that fails is a 400 naming its field."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from kubernetes.client.exceptions import ApiException
from pydantic import Field

from penguinmails.api.v1alpha1.tenant import TenantSpec
from penguinmails.common.db import contact_lists, tenant_connection
from penguinmails.sender.render import RenderError, Templates

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..kube import ClusterObjects
from ..models import ApiModel
from ..services import Services, services

__all__ = ["router"]

router = APIRouter(tags=["campaigns"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 503)
}
PREVIEW_UNSUBSCRIBE_URL = "https://unsubscribe.invalid/preview-token"
"""Stands for the contact's own one-click link, which exists only once the message is sent."""
SAMPLE_EMAIL = "jane.doe@example.com"
NO_POSTAL_ADDRESS = "(the tenant's postal address: set spec.postalAddress on the Tenant)"


class CampaignPreviewRequest(ApiModel):
    subject: str = Field(min_length=1, max_length=998, description="Subject template.")
    text: str | None = Field(
        default=None, min_length=1, max_length=262144, description="Plain-text body template."
    )
    html: str | None = Field(
        default=None, min_length=1, max_length=524288, description="HTML body template."
    )
    contact_id: uuid.UUID | None = Field(
        default=None,
        description=(
            "The sample contact (its address and fields fill the templates); unset: "
            f"{SAMPLE_EMAIL} with no fields."
        ),
    )


class PreviewContact(ApiModel):
    email: str
    fields: dict[str, Any]


class CampaignPreview(ApiModel):
    contact: PreviewContact = Field(description="The contact the message was rendered for.")
    subject: str
    text: str | None = Field(description="The plain-text part, footer included.")
    html: str | None = Field(description="The HTML part, footer included; unset: none.")
    postal_address: str | None = Field(
        description="The Tenant's postal address in the footer; unset: the Tenant has none."
    )


async def _postal_address(svc: Services, tenant: str) -> str | None:
    """The footer's address, as the operator writes it into the campaign's plan."""
    try:
        found = await ClusterObjects(svc.kube).get("tenants", tenant)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    postal = TenantSpec.model_validate(dict(found.get("spec") or {})).postal_address
    return ", ".join(postal.lines()) if postal is not None else None


@router.post(
    "/tenants/{tenant}/campaigns/preview",
    responses=_ERRORS,
    summary="Preview a campaign's message for a sample contact",
)
async def preview_campaign(
    body: CampaignPreviewRequest,
    request: Request,
    access: Annotated[TenantAccess, tenant_access(Resource.CAMPAIGNS, Access.READ)],
    _contacts: Annotated[TenantAccess, tenant_access(Resource.CONTACTS, Access.READ)],
    svc: Annotated[Services, Depends(services)],
) -> CampaignPreview:
    """The subject and bodies as the sender would render them for the contact, with the
    footer (postal address, unsubscribe link: a placeholder here). A template that does not
    compile, is over a limit or needs a field the contact lacks is a 400 naming `subject`,
    `text` or `html`."""
    request.state.audited = True  # a preview writes nothing
    if body.text is None and body.html is None:
        raise ApiError.invalid("Set text, html or both.", "text")
    email, fields = SAMPLE_EMAIL, {}
    if body.contact_id is not None:
        async with tenant_connection(svc.pool, access.tenant.id) as conn:
            found = await contact_lists.get_contact(conn, body.contact_id)
        if found is None:
            raise ApiError.not_found("contact", "contactId")
        email, fields = found.email, dict(found.fields)
    postal = await _postal_address(svc, access.tenant.name)

    def render() -> CampaignPreview:
        templates = Templates(
            body.subject,
            body.text,
            body.html,
            unsubscribe_url=PREVIEW_UNSUBSCRIBE_URL,
            postal_address=postal or NO_POSTAL_ADDRESS,
        )
        content = templates.render(email, fields, PREVIEW_UNSUBSCRIBE_URL)
        return CampaignPreview(
            contact=PreviewContact(email=email, fields=fields),
            subject=content.subject,
            text=content.text,
            html=content.html,
            postal_address=postal,
        )

    try:
        # Up to RENDER_SECONDS of rendering per field: off the event loop.
        return await asyncio.to_thread(render)
    except RenderError as error:
        raise ApiError.invalid(str(error), error.field, "template_invalid") from error
