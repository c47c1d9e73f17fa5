"""Who is calling, and may they do this to this tenant.

Two kinds of credentials, both as `Authorization: Bearer ...`:

- an access token (JWT, EdDSA, from `POST /v1/auth/token`): a user, acting in any tenant they
  are a member of, with their role there (owner > admin > member > viewer). Every request
  checks the membership and that the sign-in was not revoked, so removing a member or signing
  out takes effect at once rather than when the token expires;
- an API key (`pm_live_...`): one tenant, the scopes it was given (`<resource>:read` or
  `<resource>:write`; write implies read).

A tenant the caller cannot see is answered 404, exactly as a tenant that does not exist, so
names of other tenants cannot be probed; a visible tenant and a missing right is 403.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Path, Request

from penguinmails.common.db import accounts
from penguinmails.common.db.accounts import API_KEY_PREFIX, ApiKeyRow, Role, TenantRef

from . import idempotency
from .errors import ApiError
from .ratelimit import RateLimit, tier_rate
from .services import Services, services
from .tokens import InvalidToken

__all__ = [
    "ADMIN_ONLY",
    "SCOPES",
    "Access",
    "Caller",
    "Resource",
    "TenantAccess",
    "caller",
    "platform_admin",
    "signed_in_user",
    "tenant_access",
    "user_ids",
]


class Resource(StrEnum):
    """What a scope or a role check is about."""

    DOMAINS = "domains"
    CAMPAIGNS = "campaigns"
    SMTP_SERVERS = "smtp_servers"
    API_KEYS = "api_keys"
    BILLING = "billing"
    AUDIT_LOG = "audit_log"
    WEBHOOKS = "webhooks"
    GDPR = "gdpr"
    CONTACTS = "contacts"
    SUPPRESSION = "suppression"
    MEMBERS = "members"
    """Memberships, invitations and the tenant's security settings (MFA required)."""


ADMIN_ONLY = frozenset(
    {Resource.API_KEYS, Resource.AUDIT_LOG, Resource.WEBHOOKS, Resource.GDPR, Resource.MEMBERS}
)
"""Managed by the tenant's admins and owners only, signed in: no API key scope reaches them."""

_USERS_ONLY = ADMIN_ONLY | {Resource.BILLING}
"""Resources only signed-in users reach: an API key can neither make keys nor spend money."""

SCOPES: tuple[str, ...] = tuple(
    f"{r.value}:{a}" for r in Resource if r not in _USERS_ONLY for a in ("read", "write")
)
"""Every scope an API key can be given."""


class Access(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID | None = None
    family_id: uuid.UUID | None = None
    api_key: ApiKeyRow | None = None


@dataclass(frozen=True)
class TenantAccess:
    tenant: TenantRef
    caller: Caller
    role: Role | None
    """The user's role (None for an API key)."""


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        raise ApiError.unauthenticated(
            "No credentials: send `Authorization: Bearer <access token or API key>`.",
            "credentials_missing",
        )
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError.unauthenticated(
            "The Authorization header must be `Bearer <access token or API key>`."
        )
    return value.strip()


async def caller(request: Request, svc: Annotated[Services, Depends(services)]) -> Caller:
    """The authenticated caller; 401 for missing, malformed, forged, expired or revoked."""
    token = _bearer(request)
    if token.startswith(API_KEY_PREFIX):
        found = await accounts.authenticate_api_key(svc.pool, token)
        if found is None:
            raise ApiError.unauthenticated("The API key is not valid, expired or was revoked.")
        key, tier = found
        await _count(request, svc, tier, f"key:{key.id}", "This API key")
        request.state.idempotency = await idempotency.claim(svc.redis, request, f"key:{key.id}")
        return Caller(api_key=key)
    try:
        claims = svc.signing_keys.verify(token)
    except InvalidToken as error:
        raise ApiError.unauthenticated(
            "The access token is not valid or has expired: sign in or refresh it."
        ) from error
    request.state.idempotency = await idempotency.claim(
        svc.redis, request, f"user:{claims.user_id}"
    )
    return Caller(user_id=claims.user_id, family_id=claims.family_id)


async def _count(request: Request, svc: Services, tier: str, subject: str, what: str) -> None:
    """One request of `subject` at its tier's rate (api/http/ratelimit.py); 429 past it. The
    app's middleware puts the headers on whatever answer the request ends with."""
    rate = tier_rate(svc.settings.api_key_requests_per_minute, tier)
    await RateLimit(svc.redis, rate).hit(request.scope, subject, what)


def _required_role(resource: Resource, access: Access) -> Role:
    if resource in ADMIN_ONLY:
        return Role.ADMIN
    if resource is Resource.BILLING:
        # Every member may see what the tenant pays and uses; only admins change it.
        return Role.ADMIN if access is Access.WRITE else Role.VIEWER
    return Role.MEMBER if access is Access.WRITE else Role.VIEWER


TenantName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The tenant's name (its Tenant resource).",
    ),
]


def tenant_access(resource: Resource, access: Access) -> object:
    """A dependency: the tenant named in the path, if the caller may `access` its `resource`."""

    async def check(
        request: Request,
        tenant: TenantName,
        who: Annotated[Caller, Depends(caller)],
        svc: Annotated[Services, Depends(services)],
    ) -> TenantAccess:
        found = await accounts.tenant_by_name(svc.pool, tenant)
        role: Role | None = None
        if who.api_key is None and found is not None:
            # A sign-in is counted per tenant, at that tenant's tier (an API key was counted
            # when it was authenticated); before the membership check, so probing counts too.
            assert who.family_id is not None
            await _count(
                request, svc, found.tier, f"session:{who.family_id}:{found.id}", "This sign-in"
            )
        if who.api_key is not None:
            if found is None or who.api_key.tenant_id != found.id:
                raise ApiError.not_found("tenant", "tenant")
            if resource in _USERS_ONLY:
                what = resource.value.replace("_", " ")
                raise ApiError.forbidden(
                    f"API keys cannot reach {what}: sign in as an admin of the tenant."
                )
            held = set(who.api_key.scopes)
            wanted = {f"{resource.value}:write"}
            if access is Access.READ:
                wanted.add(f"{resource.value}:read")
            if not held & wanted:
                raise ApiError.forbidden(
                    f"This API key lacks the scope {resource.value}:{access.value}.",
                    "scope_missing",
                )
        else:
            assert who.user_id is not None and who.family_id is not None
            member = None
            if found is not None:
                member = await accounts.membership_access(
                    svc.pool, who.user_id, found.id, who.family_id
                )
                role = member.role if member is not None else None
            if role is None:
                if await accounts.family_revoked(svc.pool, who.family_id):
                    raise ApiError.unauthenticated(
                        "This sign-in was revoked: sign in again.", "token_revoked"
                    )
                raise ApiError.not_found("tenant", "tenant")
            if member is not None and member.mfa_missing:
                raise ApiError.forbidden(
                    f"The tenant {tenant} requires multi-factor authentication: enroll with "
                    "POST /v1/me/mfa/enroll and /v1/me/mfa/confirm, then sign in again "
                    "(password and code).",
                    "mfa_required",
                )
            needed = _required_role(resource, access)
            if not role.at_least(needed):
                raise ApiError.forbidden(
                    f"Your role {role.value} cannot {access.value} {resource.value}: "
                    f"it needs {needed.value} or above."
                )
        assert found is not None
        # A tenant suspended for not paying must still be able to pay.
        if found.suspended and access is Access.WRITE and resource is not Resource.BILLING:
            raise ApiError.forbidden(
                "The tenant is suspended: only reads are allowed.", "tenant_suspended"
            )
        granted = TenantAccess(found, who, role)
        # For the audit trail the middleware writes once the route answered (api/http/audit.py).
        request.state.tenant_access = granted
        return granted

    return Depends(check)


async def signed_in_user(
    who: Annotated[Caller, Depends(caller)], svc: Annotated[Services, Depends(services)]
) -> Caller:
    """A dependency: a user's live sign-in (not an API key)."""
    if who.user_id is None or who.family_id is None:
        raise ApiError.forbidden("This needs a signed-in user, not an API key.", "user_required")
    if await accounts.family_revoked(svc.pool, who.family_id):
        raise ApiError.unauthenticated("This sign-in was revoked: sign in again.", "token_revoked")
    return who


def user_ids(who: Caller) -> tuple[uuid.UUID, uuid.UUID]:
    """(user id, sign-in id) of a caller `signed_in_user` let through."""
    assert who.user_id is not None and who.family_id is not None
    return who.user_id, who.family_id


async def platform_admin(
    who: Annotated[Caller, Depends(caller)], svc: Annotated[Services, Depends(services)]
) -> Caller:
    """A dependency: a platform administrator's live sign-in that proved a second factor (the
    flag only the platform's database login sets: `python -m penguinmails.api.http
    platform-admin`), else 403."""
    if who.user_id is None or who.family_id is None:
        raise ApiError.forbidden(
            "Platform administration needs a signed-in administrator, not an API key.",
            "platform_admin_required",
        )
    if not await accounts.is_platform_admin(svc.pool, who.user_id, who.family_id):
        if await accounts.family_revoked(svc.pool, who.family_id):
            raise ApiError.unauthenticated(
                "This sign-in was revoked: sign in again.", "token_revoked"
            )
        raise ApiError.forbidden(
            "Only platform administrators may do this.", "platform_admin_required"
        )
    # Every tenant is within reach of this sign-in: a password alone is not enough.
    if not await accounts.family_has_mfa(svc.pool, who.family_id):
        raise ApiError.forbidden(
            "Platform administration needs a sign-in with a second factor: enroll with "
            "POST /v1/me/mfa/enroll and /v1/me/mfa/confirm, then sign in again (password and "
            "code).",
            "mfa_required",
        )
    return who
