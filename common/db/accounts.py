"""The customer API's accounts (migration 0005): users, memberships, refresh tokens, API keys.

Platform-scoped data: a user spans tenants, so these functions run on the API's own login
(a member of `penguinmails_api`), never on a tenant's login and never as a superuser. Tenant
data (contacts, campaigns' rows...) is not read here.

Secrets are never stored: passwords as argon2id hashes (argon2-cffi's defaults, RFC 9106's
second recommended profile), refresh tokens and API keys as SHA-256 of 256 random bits (a hash
that cannot be guessed backwards needs no slow hash).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from penguinmails.common.db import AnyConnection

__all__ = [
    "API_KEY_PREFIX",
    "REFRESH_TOKEN_PREFIX",
    "ApiKeyRow",
    "MemberAccess",
    "RefreshOutcome",
    "Role",
    "TenantRef",
    "add_membership",
    "authenticate_api_key",
    "authenticate_password",
    "create_api_key",
    "create_user",
    "create_user_in",
    "email_of",
    "family_has_mfa",
    "family_revoked",
    "is_platform_admin",
    "issue_refresh_token",
    "list_api_keys",
    "mark_family_mfa",
    "membership_access",
    "membership_role",
    "memberships_of",
    "revoke_api_key",
    "revoke_family",
    "rotate_refresh_token",
    "tenant_by_name",
]

API_KEY_PREFIX = "pm_live_"
REFRESH_TOKEN_PREFIX = "pm_rt_"  # noqa: S105 (a prefix, not a secret)
_DISPLAY_PREFIX = len(API_KEY_PREFIX) + 6

_hasher = PasswordHasher()
# Verified against when the address is unknown, so an unknown address takes as long as a
# wrong password (no account enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    """A user's role in one tenant, from most to least powerful."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    def at_least(self, other: Role) -> bool:
        order = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]
        return order.index(self) >= order.index(other)


@dataclass(frozen=True)
class TenantRef:
    """A live tenant as the API needs it: id, name, and the namespace its resources live in."""

    id: uuid.UUID
    name: str
    namespace: str
    suspended: bool
    tier: str
    """Its tier (api/v1alpha1/tiers.py), as the operator last wrote it."""


@dataclass(frozen=True)
class ApiKeyRow:
    """An API key as listed: never the key itself."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class RefreshOutcome:
    """A refresh token exchanged: who, which family, and the new token (shown once)."""

    user_id: uuid.UUID
    family_id: uuid.UUID
    token: str


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


async def create_user(
    pool: asyncpg.Pool, email: str, password: str, display_name: str | None = None
) -> uuid.UUID:
    """A new user; raises asyncpg.UniqueViolationError if the address is taken."""
    return await create_user_in(pool, email, password, display_name)


async def create_user_in(
    db: asyncpg.Pool | AnyConnection, email: str, password: str, display_name: str | None
) -> uuid.UUID:
    """`create_user` on a connection (inside the caller's transaction)."""
    user_id = await db.fetchval(
        "INSERT INTO users (email, password_hash, display_name) VALUES ($1, $2, $3) RETURNING id",
        email.strip(),
        _hasher.hash(password),
        display_name,
    )
    assert isinstance(user_id, uuid.UUID)
    return user_id


async def authenticate_password(pool: asyncpg.Pool, email: str, password: str) -> uuid.UUID | None:
    """The user's id when the address and password match an enabled account, else None."""
    row = await pool.fetchrow(
        "SELECT id, password_hash, disabled_at FROM users WHERE lower(email) = lower($1)",
        email.strip(),
    )
    stored = str(row["password_hash"]) if row is not None else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row["disabled_at"] is not None:
        return None
    if _hasher.check_needs_rehash(stored):  # parameters raised since: upgrade in place
        await pool.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1", row["id"], _hasher.hash(password)
        )
    user_id = row["id"]
    assert isinstance(user_id, uuid.UUID)
    return user_id


async def add_membership(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role
) -> None:
    await pool.execute(
        "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3) "
        "ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        tenant_id,
        user_id,
        role.value,
    )


async def tenant_by_name(pool: asyncpg.Pool, name: str) -> TenantRef | None:
    """The live tenant called `name` (None if there is none or it was deleted)."""
    row = await pool.fetchrow(
        "SELECT id, name, namespace, suspended, tier FROM tenants "
        "WHERE name = $1 AND deleted_at IS NULL",
        name,
    )
    if row is None:
        return None
    return TenantRef(row["id"], row["name"], row["namespace"], row["suspended"], row["tier"])


async def membership_role(
    pool: asyncpg.Pool, user_id: uuid.UUID, tenant_id: uuid.UUID, family_id: uuid.UUID
) -> Role | None:
    """The user's role in the tenant, if the user is enabled, a member, and the sign-in
    (token family) the access token came from has not been revoked; else None."""
    role = await pool.fetchval(
        "SELECT m.role FROM memberships m JOIN users u ON u.id = m.user_id "
        "JOIN token_families f ON f.user_id = u.id "
        "WHERE m.user_id = $1 AND m.tenant_id = $2 AND f.id = $3 "
        "AND u.disabled_at IS NULL AND f.revoked_at IS NULL",
        user_id,
        tenant_id,
        family_id,
    )
    return Role(role) if role is not None else None


@dataclass(frozen=True)
class MemberAccess:
    role: Role
    mfa_missing: bool
    """The tenant requires MFA and this sign-in did not prove a second factor."""


async def membership_access(
    pool: asyncpg.Pool, user_id: uuid.UUID, tenant_id: uuid.UUID, family_id: uuid.UUID
) -> MemberAccess | None:
    """As `membership_role`, and whether the tenant's MFA requirement is unmet (0010)."""
    row = await pool.fetchrow(
        "SELECT m.role, COALESCE(s.mfa_required, false) AND f.mfa_at IS NULL AS mfa_missing "
        "FROM memberships m JOIN users u ON u.id = m.user_id "
        "JOIN token_families f ON f.user_id = u.id "
        "LEFT JOIN tenant_security s ON s.tenant_id = m.tenant_id "
        "WHERE m.user_id = $1 AND m.tenant_id = $2 AND f.id = $3 "
        "AND u.disabled_at IS NULL AND f.revoked_at IS NULL",
        user_id,
        tenant_id,
        family_id,
    )
    return MemberAccess(Role(row["role"]), bool(row["mfa_missing"])) if row else None


async def is_platform_admin(pool: asyncpg.Pool, user_id: uuid.UUID, family_id: uuid.UUID) -> bool:
    """True for an enabled platform administrator whose sign-in is live."""
    found = await pool.fetchval(
        "SELECT EXISTS (SELECT FROM users u JOIN token_families f ON f.user_id = u.id "
        "WHERE u.id = $1 AND f.id = $2 AND u.platform_admin AND u.disabled_at IS NULL "
        "AND f.revoked_at IS NULL)",
        user_id,
        family_id,
    )
    return bool(found)


async def mark_family_mfa(pool: asyncpg.Pool, family_id: uuid.UUID) -> None:
    """This sign-in proved a second factor (MFA just confirmed in it)."""
    await pool.execute(
        "UPDATE token_families SET mfa_at = COALESCE(mfa_at, now()) WHERE id = $1", family_id
    )


async def family_has_mfa(pool: asyncpg.Pool, family_id: uuid.UUID) -> bool:
    """Whether this sign-in proved a second factor."""
    found = await pool.fetchval(
        "SELECT mfa_at IS NOT NULL FROM token_families WHERE id = $1", family_id
    )
    return bool(found)


async def email_of(pool: asyncpg.Pool, user_id: uuid.UUID) -> str | None:
    found = await pool.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    return str(found) if found is not None else None


async def memberships_of(pool: asyncpg.Pool, user_id: uuid.UUID) -> list[tuple[str, Role]]:
    """(tenant name, role) of each live tenant the user belongs to, by name."""
    rows = await pool.fetch(
        "SELECT t.name, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id "
        "WHERE m.user_id = $1 AND t.deleted_at IS NULL ORDER BY t.name",
        user_id,
    )
    return [(str(r["name"]), Role(r["role"])) for r in rows]


# ------------------------------------------------------------------------------------------
# Refresh tokens
# ------------------------------------------------------------------------------------------


async def issue_refresh_token(
    pool: asyncpg.Pool, user_id: uuid.UUID, ttl: timedelta, *, mfa: bool = False
) -> RefreshOutcome:
    """A new sign-in: a new token family and its first refresh token. `mfa`: the sign-in
    proved a second factor (tenants requiring MFA open to it)."""
    family_id = uuid.uuid4()
    token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO token_families (id, user_id, mfa_at) "
            "VALUES ($1, $2, CASE WHEN $3 THEN now() END)",
            family_id,
            user_id,
            mfa,
        )
        await conn.execute(
            "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at) "
            "VALUES ($1, $2, $3, now() + $4::interval)",
            user_id,
            family_id,
            _digest(token),
            ttl,
        )
    return RefreshOutcome(user_id, family_id, token)


async def rotate_refresh_token(
    pool: asyncpg.Pool, token: str, ttl: timedelta
) -> RefreshOutcome | None:
    """Exchange a refresh token for the next one of its family; None when it is not valid.

    A token that was already used, or belongs to a revoked family, is a replay: the whole
    family is revoked (its refresh tokens and, through `token_families`, its access tokens).
    The exchange is one conditional UPDATE, so two concurrent uses of one token cannot both win.
    """
    digest = _digest(token)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE refresh_tokens r SET used_at = now() FROM token_families f, users u "
            "WHERE r.token_hash = $1 AND r.used_at IS NULL AND r.revoked_at IS NULL "
            "AND r.expires_at > now() AND f.id = r.family_id AND f.revoked_at IS NULL "
            "AND u.id = r.user_id AND u.disabled_at IS NULL "
            "RETURNING r.user_id, r.family_id",
            digest,
        )
        if row is None:
            known = await conn.fetchrow(
                "SELECT family_id, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
                digest,
            )
            if known is not None and (known["used_at"] is not None or known["revoked_at"]):
                await _revoke_family(conn, known["family_id"])
            return None
        new = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at) "
            "VALUES ($1, $2, $3, now() + $4::interval)",
            row["user_id"],
            row["family_id"],
            _digest(new),
            ttl,
        )
    return RefreshOutcome(row["user_id"], row["family_id"], new)


async def _revoke_family(conn: AnyConnection, family_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE token_families SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        family_id,
    )
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
    )


async def revoke_family(pool: asyncpg.Pool, family_id: uuid.UUID) -> None:
    """Sign out: the family's refresh tokens and access tokens stop working."""
    async with pool.acquire() as conn, conn.transaction():
        await _revoke_family(conn, family_id)


async def family_revoked(pool: asyncpg.Pool, family_id: uuid.UUID) -> bool:
    """True unless the family exists, is not revoked and its user is enabled."""
    live = await pool.fetchval(
        "SELECT EXISTS (SELECT FROM token_families f JOIN users u ON u.id = f.user_id "
        "WHERE f.id = $1 AND f.revoked_at IS NULL AND u.disabled_at IS NULL)",
        family_id,
    )
    return not live


# ------------------------------------------------------------------------------------------
# API keys
# ------------------------------------------------------------------------------------------

_KEY_COLUMNS = (
    "id, tenant_id, name, prefix, scopes, created_at, expires_at, last_used_at, revoked_at"
)
_INSERT_KEY = (
    "INSERT INTO api_keys (tenant_id, created_by, name, prefix, key_hash, scopes, expires_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING " + _KEY_COLUMNS
)


def _key_row(row: asyncpg.Record) -> ApiKeyRow:
    return ApiKeyRow(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


async def create_api_key(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    *,
    name: str,
    scopes: list[str],
    created_by: uuid.UUID | None,
    expires_at: datetime | None,
) -> tuple[ApiKeyRow, str]:
    """A new key for the tenant: its row, and the key itself (the only time it is known)."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = await pool.fetchrow(
        _INSERT_KEY,
        tenant_id,
        created_by,
        name,
        key[:_DISPLAY_PREFIX],
        _digest(key),
        sorted(set(scopes)),
        expires_at,
    )
    assert row is not None
    return _key_row(row), key


async def list_api_keys(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[ApiKeyRow]:
    """The tenant's keys, newest first, after the key `after` (a cursor)."""
    rows = await pool.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND "  # noqa: S608 (constant)
        "($2::uuid IS NULL OR (created_at, id) < "
        "(SELECT created_at, id FROM api_keys WHERE id = $2 AND tenant_id = $1)) "
        "ORDER BY created_at DESC, id DESC LIMIT $3",
        tenant_id,
        after,
        limit,
    )
    return [_key_row(r) for r in rows]


async def revoke_api_key(pool: asyncpg.Pool, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    """Revoke one of the tenant's keys; False if the tenant has no such key."""
    found = await pool.fetchval(
        "WITH k AS (UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) "
        "WHERE id = $1 AND tenant_id = $2 RETURNING id) SELECT EXISTS (SELECT FROM k)",
        key_id,
        tenant_id,
    )
    return bool(found)


async def authenticate_api_key(pool: asyncpg.Pool, key: str) -> tuple[ApiKeyRow, str] | None:
    """The key's row and its tenant's tier when the key is known, not revoked, not expired and
    its tenant is live."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    row = await pool.fetchrow(
        f"SELECT {_KEY_COLUMNS}, (SELECT t.tier FROM tenants t "  # noqa: S608 (constant)
        "WHERE t.id = api_keys.tenant_id AND t.deleted_at IS NULL) AS tier FROM api_keys "
        "WHERE key_hash = $1 AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > now()) AND EXISTS (SELECT FROM tenants t "
        "WHERE t.id = api_keys.tenant_id AND t.deleted_at IS NULL)",
        _digest(key),
    )
    if row is None:
        return None
    # last_used is for humans deciding which key to retire: minute precision spares a write
    # on every request.
    await pool.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        row["id"],
    )
    return _key_row(row), row["tier"]
