"""A tenant's people (migrations 0005 and 0010): memberships, invitations, and the tenant's
security setting (MFA required). Runs on the API's login, like `accounts`.

The rules every change keeps, checked in the same transaction as the change (the tenant's
owner rows locked, so two concurrent demotions cannot both pass):

- a tenant always keeps an owner: the last one can be neither removed nor demoted;
- only an owner makes, changes or removes an owner (an admin can manage admins and below).

Invitations: a token of 256 random bits, e-mailed to the invitee (invitation_emails.py) or, with
no relay configured, shown once to the inviter; stored as its SHA-256,
good until `expires_at`, once; accepted by the user of the invited address (signed in), or by
a new account made for that address with the accept.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg

from penguinmails.common.db import AnyConnection, invitation_emails
from penguinmails.common.db.accounts import Role, create_user_in
from penguinmails.common.db.invitation_emails import InvitationMail

__all__ = [
    "INVITATION_PREFIX",
    "INVITATION_TTL",
    "AcceptOutcome",
    "Invitation",
    "InvitationPreview",
    "Member",
    "MemberError",
    "Refused",
    "accept_invitation",
    "change_role",
    "create_invitation",
    "list_invitations",
    "list_members",
    "mfa_required",
    "preview_invitation",
    "remove_member",
    "revoke_invitation",
    "set_mfa_required",
]

INVITATION_PREFIX = "pm_inv_"
INVITATION_TTL = timedelta(days=7)


class MemberError(StrEnum):
    """Why a change was refused (the API maps each to its answer)."""

    NOT_FOUND = "not_found"
    LAST_OWNER = "last_owner"
    OWNER_ONLY = "owner_only"
    INVITATION_INVALID = "invitation_invalid"
    INVITATION_EXPIRED = "invitation_expired"
    EMAIL_MISMATCH = "email_mismatch"
    ACCOUNT_EXISTS = "account_exists"


class Refused(Exception):  # noqa: N818 (reads as what it is)
    def __init__(self, reason: MemberError) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True)
class Member:
    user_id: uuid.UUID
    email: str
    role: Role
    mfa_enabled: bool
    created_at: datetime


@dataclass(frozen=True)
class Invitation:
    id: uuid.UUID
    email: str
    role: Role
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class AcceptOutcome:
    invitation_id: uuid.UUID
    tenant_id: uuid.UUID
    tenant: str
    user_id: uuid.UUID
    role: Role
    new_user: bool


@dataclass(frozen=True)
class InvitationPreview:
    """What an invitation offers, for its invitee to decide (the accept page)."""

    tenant: str
    tenant_display_name: str | None
    email: str
    role: Role
    expires_at: datetime
    account_exists: bool
    """An account of the invited address exists: it signs in to accept, rather than making
    one."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


async def list_members(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> list[Member]:
    rows = await pool.fetch(
        "SELECT m.user_id, u.email, m.role, m.created_at, EXISTS (SELECT FROM user_mfa f "
        "WHERE f.user_id = m.user_id AND f.confirmed_at IS NOT NULL) AS mfa "
        "FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 "
        "ORDER BY m.created_at, m.user_id",
        tenant_id,
    )
    return [
        Member(r["user_id"], r["email"], Role(r["role"]), r["mfa"], r["created_at"]) for r in rows
    ]


async def _guard(
    conn: AnyConnection,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    actor_role: Role,
    new_role: Role | None,
) -> Role:
    """The target's current role, after checking the owner rules for changing it to
    `new_role` (None: removing it)."""
    owners = await conn.fetch(
        "SELECT user_id FROM memberships WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE",
        tenant_id,
    )
    current = await conn.fetchval(
        "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE",
        tenant_id,
        user_id,
    )
    if current is None:
        raise Refused(MemberError.NOT_FOUND)
    role = Role(current)
    touches_owner = role is Role.OWNER or new_role is Role.OWNER
    if touches_owner and actor_role is not Role.OWNER:
        raise Refused(MemberError.OWNER_ONLY)
    if role is Role.OWNER and new_role is not Role.OWNER and len(owners) <= 1:
        raise Refused(MemberError.LAST_OWNER)
    return role


async def change_role(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role, actor_role: Role
) -> Member:
    async with pool.acquire() as conn, conn.transaction():
        await _guard(conn, tenant_id, user_id, actor_role, role)
        await conn.execute(
            "UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
            role.value,
        )
    found = [m for m in await list_members(pool, tenant_id) if m.user_id == user_id]
    if not found:  # removed meanwhile
        raise Refused(MemberError.NOT_FOUND)
    return found[0]


async def remove_member(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, user_id: uuid.UUID, actor_role: Role
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await _guard(conn, tenant_id, user_id, actor_role, None)
        await conn.execute(
            "DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2", tenant_id, user_id
        )


_INVITATION_COLUMNS = "id, email, role, created_at, expires_at, accepted_at, revoked_at"


_INSERT_INVITATION = (
    "INSERT INTO invitations (tenant_id, email, role, token_hash, invited_by, expires_at) "
    "VALUES ($1, $2, $3, $4, $5, now() + $6::interval) RETURNING " + _INVITATION_COLUMNS
)


def _invitation(row: asyncpg.Record) -> Invitation:
    return Invitation(
        row["id"],
        row["email"],
        Role(row["role"]),
        row["created_at"],
        row["expires_at"],
        row["accepted_at"],
        row["revoked_at"],
    )


async def create_invitation(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    *,
    email: str,
    role: Role,
    invited_by: uuid.UUID,
    actor_role: Role,
    ttl: timedelta = INVITATION_TTL,
    mail: InvitationMail | None = None,
) -> tuple[Invitation, str]:
    """A new invitation and its token (the only time it is known); with `mail`, its e-mail
    recorded as owed in the same transaction (invitation_emails.send_owed sends it)."""
    if role is Role.OWNER and actor_role is not Role.OWNER:
        raise Refused(MemberError.OWNER_ONLY)
    token = INVITATION_PREFIX + secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            _INSERT_INVITATION,
            tenant_id,
            email.strip(),
            role.value,
            _digest(token),
            invited_by,
            ttl,
        )
        assert row is not None
        if mail is not None:
            await invitation_emails.record(conn, mail, row["id"], token)
    return _invitation(row), token


async def list_invitations(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> list[Invitation]:
    rows = await pool.fetch(
        f"SELECT {_INVITATION_COLUMNS} FROM invitations WHERE tenant_id = $1 "  # noqa: S608
        "ORDER BY created_at DESC, id",
        tenant_id,
    )
    return [_invitation(r) for r in rows]


async def revoke_invitation(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, invitation_id: uuid.UUID
) -> bool:
    found = await pool.fetchval(
        "WITH i AS (UPDATE invitations SET revoked_at = COALESCE(revoked_at, now()) "
        "WHERE id = $1 AND tenant_id = $2 AND accepted_at IS NULL RETURNING id) "
        "SELECT EXISTS (SELECT FROM i)",
        invitation_id,
        tenant_id,
    )
    return bool(found)


async def preview_invitation(pool: asyncpg.Pool, token: str) -> InvitationPreview:
    """The open invitation of `token`, changing nothing. Raises Refused, as accepting would."""
    row = await pool.fetchrow(
        "SELECT i.email, i.role, i.expires_at, i.expires_at < now() AS expired, t.name, "
        "t.display_name, EXISTS (SELECT FROM users u WHERE lower(u.email) = lower(i.email)) "
        "AS account_exists FROM invitations i JOIN tenants t ON t.id = i.tenant_id "
        "WHERE i.token_hash = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL "
        "AND t.deleted_at IS NULL",
        _digest(token),
    )
    if row is None:
        raise Refused(MemberError.INVITATION_INVALID)
    if row["expired"]:
        raise Refused(MemberError.INVITATION_EXPIRED)
    return InvitationPreview(
        tenant=row["name"],
        tenant_display_name=row["display_name"],
        email=row["email"],
        role=Role(row["role"]),
        expires_at=row["expires_at"],
        account_exists=row["account_exists"],
    )


async def accept_invitation(
    pool: asyncpg.Pool,
    token: str,
    *,
    user_id: uuid.UUID | None,
    password: str | None = None,
    display_name: str | None = None,
) -> AcceptOutcome:
    """Join the tenant: as the signed-in `user_id` (whose address must be the invited one), or
    as a new user of the invited address with `password`. Raises Refused."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT i.id, i.tenant_id, i.email, i.role, i.expires_at < now() AS expired, "
            "t.name FROM invitations i JOIN tenants t ON t.id = i.tenant_id "
            "WHERE i.token_hash = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL "
            "AND t.deleted_at IS NULL FOR UPDATE OF i",
            _digest(token),
        )
        if row is None:
            raise Refused(MemberError.INVITATION_INVALID)
        if row["expired"]:
            raise Refused(MemberError.INVITATION_EXPIRED)
        new_user = user_id is None
        if user_id is not None:
            email = await conn.fetchval("SELECT email FROM users WHERE id = $1", user_id)
            if email is None or str(email).lower() != str(row["email"]).lower():
                raise Refused(MemberError.EMAIL_MISMATCH)
        else:
            assert password is not None
            try:
                async with conn.transaction():
                    user_id = await create_user_in(conn, row["email"], password, display_name)
            except asyncpg.UniqueViolationError:
                raise Refused(MemberError.ACCOUNT_EXISTS) from None
        role = Role(row["role"])
        # Already a member: the role they have stays (an invitation never demotes).
        await conn.execute(
            "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3) "
            "ON CONFLICT (tenant_id, user_id) DO NOTHING",
            row["tenant_id"],
            user_id,
            role.value,
        )
        held = await conn.fetchval(
            "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2",
            row["tenant_id"],
            user_id,
        )
        await conn.execute(
            "UPDATE invitations SET accepted_at = now(), accepted_by = $2 WHERE id = $1",
            row["id"],
            user_id,
        )
    return AcceptOutcome(row["id"], row["tenant_id"], row["name"], user_id, Role(held), new_user)


async def mfa_required(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> bool:
    found = await pool.fetchval(
        "SELECT mfa_required FROM tenant_security WHERE tenant_id = $1", tenant_id
    )
    return bool(found)


async def set_mfa_required(pool: asyncpg.Pool, tenant_id: uuid.UUID, required: bool) -> None:
    await pool.execute(
        "INSERT INTO tenant_security (tenant_id, mfa_required) VALUES ($1, $2) "
        "ON CONFLICT (tenant_id) DO UPDATE SET mfa_required = EXCLUDED.mfa_required, "
        "updated_at = now()",
        tenant_id,
        required,
    )
