"""The suppression list's keyed hash, and adding to / checking the list.

An address is never stored on the suppression list, only `address_hash(key, address)`: an
HMAC-SHA256 of the normalized address under a platform secret (`PM_SUPPRESSION_KEY`). The list
therefore survives a GDPR erasure of the contact (nothing personal remains, yet the address is
still recognised if it is imported again), and a leaked table cannot be reversed by hashing a
dictionary of addresses without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from enum import StrEnum

from penguinmails.common.db import AnyConnection

__all__ = [
    "SUPPRESSION_KEY_ENV",
    "SuppressionReason",
    "TokenPurpose",
    "address_hash",
    "is_suppressed",
    "make_token",
    "normalize_address",
    "read_token",
    "suppress",
    "suppression_key",
]

SUPPRESSION_KEY_ENV = "PM_SUPPRESSION_KEY"


class SuppressionReason(StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"


def normalize_address(address: str) -> str:
    """Trimmed, lower-cased, IDNA domain. Local parts are case-folded too: no receiver in
    practice distinguishes `Jane@` from `jane@`, and a suppression must match both. Sub-address
    tags and dots are kept: only some providers ignore them."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an e-mail address: {address!r}")
    try:
        ascii_domain = domain.strip().rstrip(".").encode("idna").decode("ascii")
    except UnicodeError as error:
        raise ValueError(f"invalid domain in {address!r}") from error
    return f"{local.lower()}@{ascii_domain.lower()}"


def address_hash(key: bytes, address: str) -> bytes:
    """HMAC-SHA256 (32 bytes) of the normalized address."""
    return hmac.new(key, normalize_address(address).encode("utf-8"), hashlib.sha256).digest()


def suppression_key() -> bytes:
    """`PM_SUPPRESSION_KEY` (any string; 32+ random bytes recommended)."""
    raw = os.environ.get(SUPPRESSION_KEY_ENV, "")
    if not raw:
        raise ValueError(
            f"{SUPPRESSION_KEY_ENV} is not set: set it to a long random secret shared by the "
            "operator, the API and the sender (e.g. `openssl rand -hex 32`)"
        )
    return raw.encode("utf-8")


async def suppress(
    conn: AnyConnection,
    hashed: bytes,
    reason: SuppressionReason,
    source: str | None = None,
) -> bool:
    """Add to the list of the current tenant scope; True when it was not there yet.

    A repeat is harmless: the first reason is kept, except that a complaint or hard bounce
    overrides a weaker reason (so the strongest evidence is what the tenant sees)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO suppressions (address_hash, reason, source) VALUES ($1, $2, $3)
        ON CONFLICT (tenant_id, address_hash) DO UPDATE SET reason = EXCLUDED.reason
        WHERE suppressions.reason IN ('unsubscribed', 'manual')
          AND EXCLUDED.reason IN ('complaint', 'hard_bounce')
        RETURNING xmax = 0
        """,
        hashed,
        reason.value,
        source,
    )
    return bool(inserted)


async def is_suppressed(conn: AnyConnection, hashed: bytes) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT FROM suppressions WHERE address_hash = $1)", hashed
        )
    )


# --------------------------------------------------------------------------------------------
# Tokens in unsubscribe URLs and return-path addresses
# --------------------------------------------------------------------------------------------
#
# A token names one delivery (tenant id + delivery id) and carries an 80-bit HMAC under the
# platform key, bound to its purpose: it reveals no address, cannot be forged or enumerated,
# and an unsubscribe token is not accepted as a bounce token. Base32 in lower case, because
# local parts of return-path addresses may be case-folded on the way back.


class TokenPurpose(StrEnum):
    UNSUBSCRIBE = "u"
    BOUNCE = "b"


_MAC_BYTES = 10


def make_token(key: bytes, purpose: TokenPurpose, tenant_id: uuid.UUID, delivery_id: int) -> str:
    payload = tenant_id.bytes + delivery_id.to_bytes(8, "big")
    mac = hmac.new(key, purpose.value.encode() + payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b32encode(payload + mac).decode("ascii").rstrip("=").lower()


def read_token(key: bytes, purpose: TokenPurpose, token: str) -> tuple[uuid.UUID, int] | None:
    """(tenant id, delivery id), or None for anything that is not a valid token."""
    text = token.strip().upper()
    if len(text) != 55 or not text.isalnum():
        return None
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        return None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != text:
        return None  # a non-canonical spelling (spare bits set): one token, one spelling
    payload, mac = raw[:24], raw[24:]
    expected = hmac.new(key, purpose.value.encode() + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected[:_MAC_BYTES]):
        return None
    return uuid.UUID(bytes=payload[:16]), int.from_bytes(payload[16:], "big")
