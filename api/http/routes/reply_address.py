"""The tenant's reply address: where the customer's mailbox server sends a copy of its inbound
mail so that replies to campaign messages are recorded (docs/sending.md, Replies). The address
names the tenant only (a `TokenPurpose.REPLY` token under the platform's key ring), so it is
the same at every call and reveals nothing; readable by whoever may read the domains."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from penguinmails.api.v1alpha1.common import DNS_SUBDOMAIN_PATTERN
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import reply_address

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel

__all__ = ["router"]

router = APIRouter(tags=["sending-domains"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 503)
}


class ReplyAddress(ApiModel):
    domain: str = Field(description="The domain asked for.")
    address: str = Field(
        description="Copy inbound mail of the tenant's mailboxes to this address (BCC, Sieve "
        "`redirect :copy`, a forwarding rule that keeps a copy)."
    )


@router.get(
    "/tenants/{tenant}/reply-address",
    responses=_ERRORS,
    summary="The address the mailboxes' server copies replies to",
)
async def tenant_reply_address(
    access: Annotated[TenantAccess, tenant_access(Resource.DOMAINS, Access.READ)],
    domain: Annotated[
        str,
        Query(
            pattern=DNS_SUBDOMAIN_PATTERN,
            max_length=253,
            description="A domain whose `replies+` mail reaches the platform's intake, as its "
            "`bounces+` mail does: usually the sending domain.",
        ),
    ],
) -> ReplyAddress:
    try:
        keys = MasterKeys.from_env()
    except ValueError as error:  # its message never echoes the key
        raise ApiError(
            503,
            "api_error",
            "not_configured",
            "Reply addresses cannot be made on this server (PM_SUPPRESSION_KEY is not set).",
        ) from error
    tenant_id = access.tenant.id
    return ReplyAddress(
        domain=domain, address=reply_address(keys.token_key(tenant_id), tenant_id, domain)
    )
