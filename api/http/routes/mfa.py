"""A user's own multi-factor authentication: enroll a TOTP authenticator, confirm it with a
first code (which turns MFA on and answers the recovery codes, once), disable it with a code.

The TOTP secret is encrypted at rest under a key derived from the platform's master key
(PM_SUPPRESSION_KEY, common/keys.py); an API without it answers 503 on these routes and for
sign-ins of users with MFA on. Every change is recorded in the platform audit log.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from penguinmails.common import totp
from penguinmails.common.db import accounts, mfa
from penguinmails.common.keys import MasterKeys

from ..auth import Caller, signed_in_user, user_ids
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..platform_audit import record_platform
from ..services import Services, services
from ..throttle import sign_in_throttle

__all__ = ["master_keys", "router"]

router = APIRouter(tags=["mfa"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 409, 503)
}


def master_keys() -> MasterKeys:
    """The platform's master keys, or 503 when this API was not given them."""
    try:
        return MasterKeys.from_env()
    except ValueError as error:
        raise ApiError(
            503,
            "api_error",
            "mfa_unavailable",
            "Multi-factor authentication is not configured on this API (PM_SUPPRESSION_KEY).",
        ) from error


class MfaStatus(ApiModel):
    enabled: bool = Field(description="Sign-in asks for a code.")
    pending: bool = Field(description="Enrolled and waiting for the first code to confirm.")
    recovery_codes_left: int = Field(description="Unused recovery codes.")


class MfaEnrollment(ApiModel):
    secret: str = Field(description="The TOTP secret (base32): shown this once.")
    otpauth_uri: str = Field(description="The same as an otpauth:// URI, for a QR code.")


class MfaCode(ApiModel):
    code: str | None = Field(
        default=None, min_length=6, max_length=8, description="The authenticator's 6 digits."
    )
    recovery_code: str | None = Field(
        default=None,
        min_length=8,
        max_length=40,
        description="Instead of a code (disable only): one of the recovery codes.",
    )


class RecoveryCodes(ApiModel):
    recovery_codes: list[str] = Field(
        description="Ten codes, each good once instead of a TOTP code: shown this once."
    )


Me = Annotated[Caller, Depends(signed_in_user)]
Svc = Annotated[Services, Depends(services)]


@router.get("/me/mfa", responses=_ERRORS, summary="Whether MFA is on for the signed-in user")
async def mfa_status(who: Me, svc: Svc) -> MfaStatus:
    user_id, _ = user_ids(who)
    found = await mfa.state(svc.pool, user_id)
    return MfaStatus(
        enabled=found.enabled, pending=found.pending, recovery_codes_left=found.recovery_codes_left
    )


@router.post(
    "/me/mfa/enroll",
    status_code=201,
    responses=_ERRORS,
    summary="Start enrolling a TOTP authenticator",
)
async def enroll(who: Me, svc: Svc, request: Request, response: Response) -> MfaEnrollment:
    user_id, _ = user_ids(who)
    secret = await mfa.start_enrollment(svc.pool, master_keys(), user_id)
    if secret is None:
        raise ApiError(
            409,
            "conflict_error",
            "mfa_enabled",
            "MFA is already on: disable it (with a code) before enrolling a new authenticator.",
        )
    email = await accounts.email_of(svc.pool, user_id) or str(user_id)
    await record_platform(svc, request, user_id, "mfa.enroll", f"user:{user_id}")
    response.headers["Cache-Control"] = "no-store"
    return MfaEnrollment(secret=secret, otpauth_uri=totp.otpauth_uri(secret, email))


@router.post(
    "/me/mfa/confirm",
    responses=_ERRORS,
    summary="Turn MFA on with a first code; answers the recovery codes",
)
async def confirm(
    body: MfaCode, who: Me, svc: Svc, request: Request, response: Response
) -> RecoveryCodes:
    user_id, family_id = user_ids(who)
    if body.code is None:
        raise ApiError.invalid("code is required: the authenticator's 6 digits.", "code")
    codes = await mfa.confirm(svc.pool, master_keys(), user_id, body.code)
    if codes is None:
        raise ApiError.invalid(
            "Wrong or already used code, or no enrollment waiting: enroll first, then send "
            "the code your authenticator shows now.",
            "code",
            "mfa_code_invalid",
        )
    # This sign-in just proved the second factor: tenants requiring MFA open to it.
    await accounts.mark_family_mfa(svc.pool, family_id)
    await record_platform(svc, request, user_id, "mfa.confirm", f"user:{user_id}")
    response.headers["Cache-Control"] = "no-store"
    return RecoveryCodes(recovery_codes=codes)


@router.post(
    "/me/mfa/disable",
    status_code=204,
    responses=_ERRORS,
    summary="Turn MFA off (needs a code or a recovery code)",
)
async def disable(body: MfaCode, who: Me, svc: Svc, request: Request) -> Response:
    user_id, _ = user_ids(who)
    if (body.code is None) == (body.recovery_code is None):
        raise ApiError.invalid("Send either code or recoveryCode (one of them).", "code")
    if not await mfa.enrolled(svc.pool, user_id):
        raise ApiError(409, "conflict_error", "mfa_disabled", "MFA is not on.")
    # Guessing codes here (with a stolen access token) is throttled like at sign-in.
    throttle = sign_in_throttle(svc)
    email = await accounts.email_of(svc.pool, user_id) or str(user_id)
    source = request.client.host if request.client else "unknown"
    await throttle.check(email, source)
    ok = await mfa.verify(
        svc.pool, master_keys(), user_id, code=body.code, recovery_code=body.recovery_code
    )
    if not ok:
        await throttle.failed(email, source)
        raise ApiError.invalid(
            "Wrong, expired or already used code.",
            "code" if body.code is not None else "recoveryCode",
            "mfa_code_invalid",
        )
    await mfa.disable(svc.pool, user_id)
    await record_platform(svc, request, user_id, "mfa.disable", f"user:{user_id}")
    return Response(status_code=204)
