"""Each tenant's own PostgreSQL login, created and kept in shape by the operator.

Row-level security (migration 0003) maps the session's login to its tenant through
`tenant_roles`: a session authenticated as a tenant's login sees and writes only that tenant's
rows whatever it sets or runs. The login is:

- `LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION`, re-asserted on every
  call, so a role altered by hand is brought back (the platform's login needs only
  `CREATEROLE`; undoing a SUPERUSER/BYPASSRLS/REPLICATION someone added needs a superuser, and
  without one the call fails rather than hand out such a login);
- a member of `penguinmails_tenant` only (what a sender needs, without the table-level
  UPDATE/DELETE that would let it LOCK a table for everybody): any other membership it gained,
  with which it could `SET ROLE` to some other role, is revoked;
- named opaquely (`pm_tenant_<random>`), since `pg_roles` is readable by every login.

The password is sent as a SCRAM-SHA-256 verifier computed here, never in clear, so it cannot
end up in the server's statement log. These functions need the platform's login (owner of
`tenant_roles`, `CREATEROLE`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

__all__ = [
    "ROLE_PREFIX",
    "SENDER_POOL_SIZE",
    "connection_limit",
    "disable_tenant_login",
    "ensure_tenant_login",
    "new_password",
    "scram_verifier",
    "tenant_login_name",
    "with_login",
]

ROLE_PREFIX = "pm_tenant_"
SENDER_POOL_SIZE = 4
"""Connections one sender process opens at most (its asyncpg pool's max_size)."""
_GROUP = "penguinmails_tenant"
_SCRAM_ITERATIONS = 4096


def new_password() -> str:
    """256 random bits, URL-safe (no quoting trouble in a DSN)."""
    return secrets.token_urlsafe(32)


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for `password` under scram-sha-256 (RFC 5802 / 7677)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, _SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def connection_limit(sender_replicas: int) -> int:
    """Connections a tenant's login may hold: its senders' pools, one more pod for a rolling
    update, two to spare. A hostile tenant cannot exhaust the server's max_connections."""
    return (sender_replicas + 1) * SENDER_POOL_SIZE + 2


async def tenant_login_name(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> str | None:
    name = await pool.fetchval("SELECT role_name FROM tenant_roles WHERE tenant_id = $1", tenant_id)
    return str(name) if name is not None else None


async def ensure_tenant_login(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, password: str, *, connections: int | None = None
) -> str:
    """Create the tenant's login if it has none, (re)set its password, attributes and
    connection limit (default: `connection_limit(1)`); return the role name. Idempotent;
    setting the password the tenant's Secret already holds changes nothing for running
    senders, setting a new one is the rotation."""
    connections = connection_limit(1) if connections is None else connections
    verifier = scram_verifier(password)
    async with pool.acquire() as conn, conn.transaction():
        # One tenant, one login, also when two operator replicas race. A row lock, not an
        # advisory one: a tenant's login could hold an advisory lock forever, but it cannot
        # lock a row it may not update.
        await conn.execute("SELECT FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
        role = await conn.fetchval(
            "SELECT role_name FROM tenant_roles WHERE tenant_id = $1", tenant_id
        )
        if role is None:
            role = ROLE_PREFIX + secrets.token_hex(8)
            await conn.execute(f"CREATE ROLE {_quote_ident(role)}")
            await conn.execute(
                "INSERT INTO tenant_roles (role_name, tenant_id) VALUES ($1, $2)", role, tenant_id
            )
        role = str(role)
        quoted = _quote_ident(role)
        # Utility statements take no parameters: the verifier is quoted as a literal. It is a
        # hash, and base64 plus `$:` never contains a quote.
        await conn.execute(
            f"ALTER ROLE {quoted} WITH LOGIN INHERIT NOCREATEDB NOCREATEROLE "
            f"CONNECTION LIMIT {int(connections)} PASSWORD '{verifier}'"
        )
        # Only a superuser may even name these attributes, and a new role has none of them:
        # touch them only if someone gave one. A platform login that is no superuser then
        # fails here, and the tenant is not handed a login that bypasses row-level security.
        widened = await conn.fetchval(
            "SELECT rolsuper OR rolbypassrls OR rolreplication FROM pg_roles WHERE rolname = $1",
            role,
        )
        if widened:
            await conn.execute(f"ALTER ROLE {quoted} NOSUPERUSER NOBYPASSRLS NOREPLICATION")
        others = await conn.fetch(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1 AND g.rolname <> $2",
            role,
            _GROUP,
        )
        for other in others:
            await conn.execute(f"REVOKE {_quote_ident(other['rolname'])} FROM {quoted}")
        is_member = await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1 AND g.rolname = $2)",
            role,
            _GROUP,
        )
        if not is_member:
            await conn.execute(f"GRANT {_GROUP} TO {quoted}")
    return role


async def disable_tenant_login(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> bool:
    """`NOLOGIN` for a deleted tenant (its rows are kept until the purge); False if none."""
    role = await tenant_login_name(pool, tenant_id)
    if role is None:
        return False
    await pool.execute(f"ALTER ROLE {_quote_ident(role)} NOLOGIN")
    return True


def with_login(base: str, user: str, password: str) -> str:
    """The URL `base` (scheme, host, port, path, options: where to connect) with this login;
    whatever login `base` had is dropped. Used for PostgreSQL DSNs and Redis URLs alike."""
    parts = urlsplit(base)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
