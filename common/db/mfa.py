"""Multi-factor authentication of users (migration 0010): TOTP secrets and recovery codes.

The TOTP secret is encrypted at rest with AES-256-GCM under a key derived from the platform's
master key (common/keys.py, purpose `mfa-secret`, per key id; the user's id is the associated
data, so a ciphertext copied onto another user's row does not decrypt). Recovery codes are
stored as SHA-256 (80 random bits each: nothing to guess backwards) and are good once.

A TOTP code is good once too: the row keeps the newest time step accepted, and a code of that
step or an older one is refused (RFC 6238 section 5.2), with one conditional UPDATE so two
concurrent uses of one code cannot both win.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from penguinmails.common import totp
from penguinmails.common.db import AnyConnection
from penguinmails.common.keys import MasterKeys, derive

__all__ = [
    "RECOVERY_CODES",
    "MfaState",
    "confirm",
    "disable",
    "enrolled",
    "start_enrollment",
    "state",
    "verify",
]

RECOVERY_CODES = 10
_PURPOSE = "mfa-secret"
_NONCE = 12


@dataclass(frozen=True)
class MfaState:
    enabled: bool
    """Confirmed: sign-in asks for a code."""
    pending: bool
    """Enrolled, not confirmed yet."""
    recovery_codes_left: int


def _aead(keys: MasterKeys, kid: int) -> AESGCM:
    secret = keys.secrets.get(kid)
    if secret is None:
        raise LookupError(f"master key {kid} is no longer in the ring: keep it while MFA uses it")
    return AESGCM(derive(secret, _PURPOSE))


def _encrypt(keys: MasterKeys, user_id: uuid.UUID, secret: str) -> tuple[int, bytes]:
    nonce = secrets.token_bytes(_NONCE)
    sealed = _aead(keys, keys.current).encrypt(nonce, secret.encode("ascii"), user_id.bytes)
    return keys.current, nonce + sealed


def _decrypt(keys: MasterKeys, user_id: uuid.UUID, kid: int, blob: bytes) -> str:
    try:
        plain = _aead(keys, kid).decrypt(blob[:_NONCE], blob[_NONCE:], user_id.bytes)
    except InvalidTag as error:
        raise LookupError("the MFA secret does not decrypt with the master key") from error
    return plain.decode("ascii")


def _normal(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def _digest(code: str) -> bytes:
    return hashlib.sha256(_normal(code).encode("utf-8")).digest()


def _new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


async def state(pool: asyncpg.Pool, user_id: uuid.UUID) -> MfaState:
    row = await pool.fetchrow(
        "SELECT confirmed_at IS NOT NULL AS enabled, (SELECT count(*) FROM mfa_recovery_codes c "
        "WHERE c.user_id = $1 AND c.used_at IS NULL) AS left FROM user_mfa WHERE user_id = $1",
        user_id,
    )
    if row is None:
        return MfaState(enabled=False, pending=False, recovery_codes_left=0)
    enabled = bool(row["enabled"])
    return MfaState(enabled, not enabled, int(row["left"]) if enabled else 0)


async def enrolled(pool: asyncpg.Pool, user_id: uuid.UUID) -> bool:
    """True once the user confirmed a TOTP authenticator."""
    found = await pool.fetchval(
        "SELECT EXISTS (SELECT FROM user_mfa WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
        user_id,
    )
    return bool(found)


async def start_enrollment(pool: asyncpg.Pool, keys: MasterKeys, user_id: uuid.UUID) -> str | None:
    """A new secret for the user (replacing an unconfirmed one); None when MFA is already on."""
    secret = totp.new_secret()
    kid, blob = _encrypt(keys, user_id, secret)
    stored = await pool.fetchval(
        "INSERT INTO user_mfa (user_id, key_id, secret_encrypted) VALUES ($1, $2, $3) "
        "ON CONFLICT (user_id) DO UPDATE SET key_id = EXCLUDED.key_id, "
        "secret_encrypted = EXCLUDED.secret_encrypted, created_at = now(), last_step = NULL "
        "WHERE user_mfa.confirmed_at IS NULL RETURNING true",
        user_id,
        kid,
        blob,
    )
    return secret if stored else None


async def _accept_code(
    conn: AnyConnection | asyncpg.Pool,
    keys: MasterKeys,
    user_id: uuid.UUID,
    code: str,
    *,
    confirmed: bool,
) -> bool:
    row = await conn.fetchrow(
        "SELECT key_id, secret_encrypted FROM user_mfa WHERE user_id = $1 AND "
        "(confirmed_at IS NOT NULL) = $2",
        user_id,
        confirmed,
    )
    if row is None:
        return False
    secret = _decrypt(keys, user_id, row["key_id"], bytes(row["secret_encrypted"]))
    step = totp.matching_step(secret, code)
    if step is None:
        return False
    won = await conn.fetchval(
        "UPDATE user_mfa SET last_step = $2 WHERE user_id = $1 "
        "AND (last_step IS NULL OR last_step < $2) RETURNING true",
        user_id,
        step,
    )
    return bool(won)


async def _use_recovery_code(pool: asyncpg.Pool, user_id: uuid.UUID, code: str) -> bool:
    used = await pool.fetchval(
        "UPDATE mfa_recovery_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 "
        "AND used_at IS NULL AND EXISTS (SELECT FROM user_mfa m WHERE m.user_id = $1 "
        "AND m.confirmed_at IS NOT NULL) RETURNING true",
        user_id,
        _digest(code),
    )
    return bool(used)


async def confirm(
    pool: asyncpg.Pool, keys: MasterKeys, user_id: uuid.UUID, code: str
) -> list[str] | None:
    """Turn MFA on with a first code; the recovery codes (shown once), or None for a wrong,
    replayed or missing enrollment."""
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    async with pool.acquire() as conn, conn.transaction():
        if not await _accept_code(conn, keys, user_id, code, confirmed=False):
            return None
        await conn.execute("UPDATE user_mfa SET confirmed_at = now() WHERE user_id = $1", user_id)
        await conn.execute("DELETE FROM mfa_recovery_codes WHERE user_id = $1", user_id)
        await conn.executemany(
            "INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)",
            [(user_id, _digest(c)) for c in codes],
        )
    return codes


async def verify(
    pool: asyncpg.Pool,
    keys: MasterKeys,
    user_id: uuid.UUID,
    *,
    code: str | None = None,
    recovery_code: str | None = None,
) -> bool:
    """A second factor of a user with MFA on: a fresh TOTP code or an unused recovery code
    (which is used up)."""
    if code is not None:
        return await _accept_code(pool, keys, user_id, code, confirmed=True)
    if recovery_code is not None:
        return await _use_recovery_code(pool, user_id, recovery_code)
    return False


async def disable(pool: asyncpg.Pool, user_id: uuid.UUID) -> None:
    """Turn MFA off (the caller verified a second factor first)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM mfa_recovery_codes WHERE user_id = $1", user_id)
        await conn.execute("DELETE FROM user_mfa WHERE user_id = $1", user_id)
