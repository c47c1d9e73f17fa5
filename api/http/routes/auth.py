"""Sign-in, refresh, sign-out, who am I, and the public keys that verify access tokens."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from penguinmails.common.db import accounts, mfa

from .. import mfa_challenge
from ..auth import Caller, signed_in_user, user_ids
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..platform_audit import record_platform
from ..services import Services, services
from ..throttle import sign_in_throttle
from .mfa import master_keys

router = APIRouter(tags=["auth"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    429: {"model": ErrorResponse},
}


class SignIn(ApiModel):
    email: str = Field(min_length=3, max_length=254, description="The account's e-mail address.")
    password: str = Field(min_length=1, max_length=1024, description="The account's password.")


class Refresh(ApiModel):
    refresh_token: str = Field(
        min_length=1, max_length=256, description="The refresh token of the last answer."
    )


class Tokens(ApiModel):
    access_token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    token_type: str = Field(default="Bearer", description="Always Bearer.")
    expires_in: int = Field(description="Seconds the access token is valid for.")
    refresh_token: str = Field(
        description="Exchange at /v1/auth/refresh for new tokens; valid once."
    )


class MfaChallenge(ApiModel):
    mfa_required: bool = Field(
        default=True, description="Always true: send a code to /v1/auth/mfa to finish signing in."
    )
    mfa_token: str = Field(description="Present with the code at /v1/auth/mfa; valid once.")
    expires_in: int = Field(description="Seconds the MFA token is valid for.")


class MfaSignIn(ApiModel):
    mfa_token: str = Field(min_length=1, max_length=256, description="From /v1/auth/token.")
    code: str | None = Field(
        default=None, min_length=6, max_length=8, description="The authenticator's 6 digits."
    )
    recovery_code: str | None = Field(
        default=None,
        min_length=8,
        max_length=40,
        description="Instead of a code: one of the recovery codes (each works once).",
    )


class Membership(ApiModel):
    tenant: str
    role: str


class Me(ApiModel):
    id: uuid.UUID
    memberships: list[Membership]
    platform_admin: bool = Field(
        default=False,
        description="A platform administrator (/v1/admin also needs a sign-in that proved a "
        "second factor).",
    )


def _tokens(svc: Services, outcome: accounts.RefreshOutcome) -> Tokens:
    ttl = svc.settings.access_token_ttl
    return Tokens(
        access_token=svc.signing_keys.issue(outcome.user_id, outcome.family_id, ttl),
        expires_in=int(ttl.total_seconds()),
        refresh_token=outcome.token,
    )


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post(
    "/auth/token",
    responses={**_ERRORS, 503: {"model": ErrorResponse}},
    summary="Sign in with e-mail and password",
    description="Answers tokens, or for a user with MFA on an `mfaToken` to present with a "
    "code at /v1/auth/mfa.",
)
async def sign_in(
    body: SignIn,
    request: Request,
    response: Response,
    svc: Annotated[Services, Depends(services)],
) -> Tokens | MfaChallenge:
    throttle = sign_in_throttle(svc)
    source = _source(request)
    await throttle.check(body.email, source)
    user_id = await accounts.authenticate_password(svc.pool, body.email, body.password)
    if user_id is None:
        await throttle.failed(body.email, source)
        raise ApiError.unauthenticated("Wrong e-mail address or password.")
    _no_store(response)
    if await mfa.enrolled(svc.pool, user_id):
        master_keys()  # 503 now rather than after the code, if the keys are missing
        token = await mfa_challenge.create(svc.redis, user_id, body.email)
        return MfaChallenge(mfa_token=token, expires_in=mfa_challenge.TTL_SECONDS)
    await throttle.succeeded(body.email, source)
    outcome = await accounts.issue_refresh_token(svc.pool, user_id, svc.settings.refresh_token_ttl)
    return _tokens(svc, outcome)


@router.post(
    "/auth/mfa",
    responses={**_ERRORS, 503: {"model": ErrorResponse}},
    summary="Finish signing in with an MFA code or a recovery code",
)
async def sign_in_mfa(
    body: MfaSignIn,
    request: Request,
    response: Response,
    svc: Annotated[Services, Depends(services)],
) -> Tokens:
    if (body.code is None) == (body.recovery_code is None):
        raise ApiError.invalid("Send either code or recoveryCode (one of them).", "code")
    challenge = await mfa_challenge.find(svc.redis, body.mfa_token)
    if challenge is None:
        raise ApiError.unauthenticated(
            "The MFA token is not valid, expired, or took too many wrong codes: sign in again.",
            "mfa_token_invalid",
        )
    throttle = sign_in_throttle(svc)
    source = _source(request)
    await throttle.check(challenge.email, source)
    keys = master_keys()
    ok = await mfa.verify(
        svc.pool, keys, challenge.user_id, code=body.code, recovery_code=body.recovery_code
    )
    if not ok:
        await throttle.failed(challenge.email, source)
        await mfa_challenge.wrong(svc.redis, body.mfa_token)
        raise ApiError.unauthenticated("Wrong, expired or already used code.", "mfa_code_invalid")
    if not await mfa_challenge.consume(svc.redis, body.mfa_token):
        raise ApiError.unauthenticated("The MFA token was already used.", "mfa_token_invalid")
    await throttle.succeeded(challenge.email, source)
    if body.recovery_code is not None:
        # One fewer code left: the user (or whoever holds their codes) should know.
        target = f"user:{challenge.user_id}"
        await record_platform(svc, request, challenge.user_id, "mfa.recovery_code_use", target)
    outcome = await accounts.issue_refresh_token(
        svc.pool, challenge.user_id, svc.settings.refresh_token_ttl, mfa=True
    )
    _no_store(response)
    return _tokens(svc, outcome)


@router.post("/auth/refresh", responses=_ERRORS, summary="Exchange a refresh token")
async def refresh(
    body: Refresh, response: Response, svc: Annotated[Services, Depends(services)]
) -> Tokens:
    outcome = await accounts.rotate_refresh_token(
        svc.pool, body.refresh_token, svc.settings.refresh_token_ttl
    )
    if outcome is None:
        raise ApiError.unauthenticated(
            "The refresh token is not valid, expired, or was already used (which signs out "
            "every session of that sign-in): sign in again.",
            "refresh_token_invalid",
        )
    _no_store(response)
    return _tokens(svc, outcome)


@router.post(
    "/auth/logout",
    status_code=204,
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
    summary="Sign out: revoke this sign-in's refresh and access tokens",
)
async def logout(
    who: Annotated[Caller, Depends(signed_in_user)], svc: Annotated[Services, Depends(services)]
) -> Response:
    _, family_id = user_ids(who)
    await accounts.revoke_family(svc.pool, family_id)
    return Response(status_code=204)


@router.get(
    "/me",
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
    summary="The signed-in user and their tenants",
)
async def me(
    who: Annotated[Caller, Depends(signed_in_user)], svc: Annotated[Services, Depends(services)]
) -> Me:
    user_id, family_id = user_ids(who)
    rows = await accounts.memberships_of(svc.pool, user_id)
    admin = await accounts.is_platform_admin(svc.pool, user_id, family_id)
    return Me(
        id=user_id,
        memberships=[Membership(tenant=t, role=r.value) for t, r in rows],
        platform_admin=admin,
    )


@router.get("/.well-known/jwks.json", summary="Public keys verifying access tokens")
async def jwks(svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    return svc.signing_keys.jwks()
