"""A tenant's people: members (list, change role, remove), invitations e-mailed to the invitee
through the platform's relay (invitation_mailer.py; the token shown instead when none is), the
tenant's security setting (MFA required). Admins and owners only; only owners make, change or
remove owners, and the last owner stays (common/db/members.py). The writes under the tenant's
path are audited by the middleware (member.update, invitation.create, security.update, ...);
an accepted invitation records invitation.accept in the tenant's audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from penguinmails.common.db import accounts, members
from penguinmails.common.db.accounts import Role
from penguinmails.common.db.invitation_emails import send_owed
from penguinmails.common.db.members import MemberError, Refused

from .. import invitation_mailer
from ..auth import Access, Caller, Resource, TenantAccess, caller, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..platform_audit import record_in_tenant
from ..services import Services, services

__all__ = ["router"]

router = APIRouter(tags=["members"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 429)
}
_READ = tenant_access(Resource.MEMBERS, Access.READ)
_WRITE = tenant_access(Resource.MEMBERS, Access.WRITE)
Svc = Annotated[Services, Depends(services)]
MIN_PASSWORD = 12


class MemberOut(ApiModel):
    user_id: uuid.UUID
    email: str
    role: Role
    mfa_enabled: bool = Field(description="The member signs in with a second factor.")
    created_at: datetime


class MemberList(ApiModel):
    data: list[MemberOut]


class RoleChange(ApiModel):
    role: Role = Field(description="owner, admin, member or viewer (only owners grant owner).")


class InvitationCreate(ApiModel):
    email: str = Field(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+\.[^@\s\x00-\x1f\x7f-\x9f]+$",
        description="Who is invited: only the account of this address can accept.",
    )
    role: Role = Field(description="The role given on acceptance (only owners invite owners).")


class InvitationOut(ApiModel):
    id: uuid.UUID
    email: str
    role: Role
    status: str = Field(description="pending, accepted, revoked or expired.")
    created_at: datetime
    expires_at: datetime


class InvitationEmail(ApiModel):
    status: Literal["sent", "pending", "refused", "not_configured"] = Field(
        description="sent: the platform's relay took the e-mail; pending: the relay could not "
        "take it now and it is tried again (the token is not shown); refused: the relay "
        "refused it for good; not_configured: the API sends no e-mail (no relay)."
    )
    message: str = Field(description="What happened and what to do, for people.")
    message_id: str | None = Field(
        default=None, description="The e-mail's Message-ID (the same on every attempt)."
    )


class InvitationCreated(InvitationOut):
    email_delivery: InvitationEmail = Field(description="The invitation e-mail to the invitee.")
    token: str | None = Field(
        default=None,
        description="The invitation token, shown this once and only when it was not e-mailed "
        "(status not_configured or refused): send it to the invitee, who accepts it at POST "
        "/v1/invitations/accept.",
    )


class InvitationList(ApiModel):
    data: list[InvitationOut]


class InvitationAccept(ApiModel):
    token: str = Field(min_length=1, max_length=256, description="The invitation token.")
    password: str | None = Field(
        default=None,
        min_length=MIN_PASSWORD,
        max_length=1024,
        description="Without a Bearer token: the password of a new account for the invited "
        "address. With one (an existing user of that address): leave it out.",
    )
    display_name: str | None = Field(default=None, max_length=200)


class InvitationLookup(ApiModel):
    token: str = Field(min_length=1, max_length=256, description="The invitation token.")


class InvitationPreview(ApiModel):
    tenant: str = Field(description="The tenant's name.")
    tenant_display_name: str | None = Field(description="The tenant's display name, if set.")
    email: str = Field(description="The invited address: only its account can accept.")
    role: Role = Field(description="The role given on acceptance.")
    expires_at: datetime
    account_exists: bool = Field(
        description="An account of the invited address exists: sign in as it and accept "
        "with its access token; otherwise accept with a password for a new account."
    )


class Accepted(ApiModel):
    tenant: str
    role: Role
    user_id: uuid.UUID
    new_user: bool = Field(description="An account was made for the invited address.")


class Security(ApiModel):
    mfa_required: bool = Field(
        description="Members must sign in with a second factor to reach the tenant."
    )


_REFUSALS = {
    MemberError.NOT_FOUND: lambda: ApiError.not_found("member", "userId"),
    MemberError.LAST_OWNER: lambda: ApiError(
        409,
        "conflict_error",
        "last_owner",
        "This is the tenant's last owner: make another member owner first.",
        param="role",
    ),
    MemberError.OWNER_ONLY: lambda: ApiError.forbidden(
        "Only an owner can make, change or remove an owner.", "owner_required"
    ),
    MemberError.INVITATION_INVALID: lambda: ApiError.not_found("invitation", "token"),
    MemberError.INVITATION_EXPIRED: lambda: ApiError(
        410,
        "invalid_request_error",
        "invitation_expired",
        "The invitation expired: ask for a new one.",
        param="token",
    ),
    MemberError.EMAIL_MISMATCH: lambda: ApiError.forbidden(
        "The invitation is for another address: sign in as that address's user.",
        "invitation_email_mismatch",
    ),
    MemberError.ACCOUNT_EXISTS: lambda: ApiError(
        409,
        "conflict_error",
        "account_exists",
        "An account exists for the invited address: sign in and accept with its access token "
        "(leave password out).",
        param="password",
    ),
}


def _refused(error: Refused) -> ApiError:
    return _REFUSALS[error.reason]()


def _actor_role(access: TenantAccess) -> Role:
    assert access.role is not None  # ADMIN_ONLY: users only
    return access.role


def _member(m: members.Member) -> MemberOut:
    return MemberOut(
        user_id=m.user_id,
        email=m.email,
        role=m.role,
        mfa_enabled=m.mfa_enabled,
        created_at=m.created_at,
    )


def _status(i: members.Invitation) -> str:
    if i.accepted_at is not None:
        return "accepted"
    if i.revoked_at is not None:
        return "revoked"
    return "expired" if i.expires_at <= datetime.now(i.expires_at.tzinfo) else "pending"


def _invitation(i: members.Invitation) -> dict[str, Any]:
    return {
        "id": i.id,
        "email": i.email,
        "role": i.role,
        "status": _status(i),
        "created_at": i.created_at,
        "expires_at": i.expires_at,
    }


@router.get("/tenants/{tenant}/members", responses=_ERRORS, summary="List the tenant's members")
async def list_members(access: Annotated[TenantAccess, _READ], svc: Svc) -> MemberList:
    found = await members.list_members(svc.pool, access.tenant.id)
    return MemberList(data=[_member(m) for m in found])


@router.patch(
    "/tenants/{tenant}/members/{user_id}", responses=_ERRORS, summary="Change a member's role"
)
async def change_role(
    user_id: uuid.UUID, body: RoleChange, access: Annotated[TenantAccess, _WRITE], svc: Svc
) -> MemberOut:
    try:
        changed = await members.change_role(
            svc.pool, access.tenant.id, user_id, body.role, _actor_role(access)
        )
    except Refused as error:
        raise _refused(error) from error
    return _member(changed)


@router.delete(
    "/tenants/{tenant}/members/{user_id}",
    status_code=204,
    responses=_ERRORS,
    summary="Remove a member (their access ends at once)",
)
async def remove_member(
    user_id: uuid.UUID, access: Annotated[TenantAccess, _WRITE], svc: Svc
) -> Response:
    try:
        await members.remove_member(svc.pool, access.tenant.id, user_id, _actor_role(access))
    except Refused as error:
        raise _refused(error) from error
    return Response(status_code=204)


@router.post(
    "/tenants/{tenant}/invitations",
    status_code=201,
    responses=_ERRORS,
    summary="Invite an address to the tenant with a role",
)
async def invite(
    body: InvitationCreate,
    response: Response,
    access: Annotated[TenantAccess, _WRITE],
    svc: Svc,
) -> InvitationCreated:
    assert access.caller.user_id is not None
    mail = invitation_mailer.configured(svc.settings)
    try:
        made, token = await members.create_invitation(
            svc.pool,
            access.tenant.id,
            email=body.email,
            role=body.role,
            invited_by=access.caller.user_id,
            actor_role=_actor_role(access),
            mail=None if isinstance(mail, str) else mail,
        )
    except Refused as error:
        raise _refused(error) from error
    response.headers["Cache-Control"] = "no-store"
    if isinstance(mail, str):
        delivery = InvitationEmail(status="not_configured", message=mail)
        return InvitationCreated(**_invitation(made), email_delivery=delivery, token=token)
    outcome = (await send_owed(svc.pool, mail, only=made.id)).get(made.id)
    message_id = await svc.pool.fetchval(
        "SELECT message_id FROM invitation_emails WHERE invitation_id = $1", made.id
    )
    if outcome is not None and outcome.refusal is not None:
        delivery = InvitationEmail(
            status="refused",
            message=f"The mail relay refused the invitation e-mail ({outcome.refusal}): send "
            "the token to the invitee yourself; it is shown this once.",
            message_id=message_id,
        )
        return InvitationCreated(**_invitation(made), email_delivery=delivery, token=token)
    if outcome is not None and outcome.sent:
        delivery = InvitationEmail(
            status="sent",
            message=f"The invitation was e-mailed to {made.email}.",
            message_id=message_id,
        )
    else:  # the relay is down (or another pass holds it): tried again, token not shown
        delivery = InvitationEmail(
            status="pending",
            message="The mail relay could not take the invitation e-mail now; it is tried "
            "again until it can. Revoke the invitation and invite again to get a token instead.",
            message_id=message_id,
        )
    return InvitationCreated(**_invitation(made), email_delivery=delivery)


@router.get(
    "/tenants/{tenant}/invitations", responses=_ERRORS, summary="List the tenant's invitations"
)
async def list_invitations(access: Annotated[TenantAccess, _READ], svc: Svc) -> InvitationList:
    found = await members.list_invitations(svc.pool, access.tenant.id)
    return InvitationList(data=[InvitationOut(**_invitation(i)) for i in found])


@router.delete(
    "/tenants/{tenant}/invitations/{invitation_id}",
    status_code=204,
    responses=_ERRORS,
    summary="Revoke an invitation not yet accepted",
)
async def revoke_invitation(
    invitation_id: uuid.UUID, access: Annotated[TenantAccess, _WRITE], svc: Svc
) -> Response:
    if not await members.revoke_invitation(svc.pool, access.tenant.id, invitation_id):
        raise ApiError.not_found("invitation", "invitation_id")
    return Response(status_code=204)


async def _optional_caller(request: Request, svc: Svc) -> Caller | None:
    if not request.headers.get("authorization"):
        return None
    return await caller(request, svc)


@router.post(
    "/invitations/lookup",
    responses={**_ERRORS, 410: {"model": ErrorResponse}},
    summary="Show what an invitation offers, without accepting it",
)
async def lookup(body: InvitationLookup, svc: Svc) -> InvitationPreview:
    """For the page the invitation e-mail links to: the tenant, the role and the invited
    address, and whether that address has an account. The token is the credential (no
    sign-in needed); a POST, so that it stays out of URLs and logs. 404 for a token that is
    not an open invitation (used, revoked, unknown), 410 once expired."""
    try:
        found = await members.preview_invitation(svc.pool, body.token)
    except Refused as error:
        raise _refused(error) from error
    return InvitationPreview(
        tenant=found.tenant,
        tenant_display_name=found.tenant_display_name,
        email=found.email,
        role=found.role,
        expires_at=found.expires_at,
        account_exists=found.account_exists,
    )


@router.post(
    "/invitations/accept",
    responses={**_ERRORS, 410: {"model": ErrorResponse}},
    summary="Accept an invitation, as a signed-in user or as a new account",
)
async def accept(
    body: InvitationAccept,
    request: Request,
    who: Annotated[Caller | None, Depends(_optional_caller)],
    svc: Svc,
) -> Accepted:
    user_id: uuid.UUID | None = None
    if who is not None:
        if who.user_id is None or who.family_id is None:
            raise ApiError.forbidden("Accept as a signed-in user, not an API key.", "user_required")
        if await accounts.family_revoked(svc.pool, who.family_id):
            raise ApiError.unauthenticated("This sign-in was revoked: sign in again.")
        if body.password is not None:
            raise ApiError.invalid(
                "Signed in: leave password out (it is for a new account).", "password"
            )
        user_id = who.user_id
    elif body.password is None:
        raise ApiError.invalid(
            "password is required for a new account; an existing user signs in and sends "
            "their access token instead.",
            "password",
            "parameter_missing",
        )
    try:
        outcome = await members.accept_invitation(
            svc.pool,
            body.token,
            user_id=user_id,
            password=body.password,
            display_name=body.display_name,
        )
    except Refused as error:
        raise _refused(error) from error
    except asyncpg.UniqueViolationError as error:  # pragma: no cover (raced a sign-up)
        raise _refused(Refused(MemberError.ACCOUNT_EXISTS)) from error
    await record_in_tenant(
        svc,
        request,
        outcome.tenant_id,
        outcome.user_id,
        "invitation.accept",
        f"invitation:{outcome.invitation_id}",
    )
    return Accepted(
        tenant=outcome.tenant, role=outcome.role, user_id=outcome.user_id, new_user=outcome.new_user
    )


@router.get("/tenants/{tenant}/security", responses=_ERRORS, summary="The tenant's security")
async def security(access: Annotated[TenantAccess, _READ], svc: Svc) -> Security:
    return Security(mfa_required=await members.mfa_required(svc.pool, access.tenant.id))


@router.patch(
    "/tenants/{tenant}/security", responses=_ERRORS, summary="Require MFA of the tenant's members"
)
async def set_security(
    body: Security, access: Annotated[TenantAccess, _WRITE], svc: Svc
) -> Security:
    # Whoever turns it on must pass it themselves, or they would lock themselves out at once.
    if body.mfa_required:
        assert access.caller.family_id is not None
        if not await accounts.family_has_mfa(svc.pool, access.caller.family_id):
            raise ApiError.forbidden(
                "Sign in with your own second factor before requiring MFA of the tenant: "
                "enroll at POST /v1/me/mfa/enroll, confirm, then sign in again.",
                "mfa_required",
            )
    await members.set_mfa_required(svc.pool, access.tenant.id, body.mfa_required)
    return Security(mfa_required=body.mfa_required)
