"""The suppression list's keyed hash, and adding to / checking the list.

An address is never stored on the suppression list, only `address_hash(key, address)`: an
HMAC-SHA256 of the normalized address under the suppression hash key, derived from the platform's
master secret and separate from every token key (`common.keys`). The list
therefore survives a GDPR erasure of the contact (nothing personal remains, yet the address is
still recognised if it is imported again), and a leaked table cannot be reversed by hashing a
dictionary of addresses without the key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import uuid
from enum import StrEnum

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from penguinmails.common.db import AnyConnection
from penguinmails.common.keys import MASTER_KEYS_ENV, MasterKeys, TokenKey

__all__ = [
    "SUPPRESSION_KEY_ENV",
    "TOKEN_LENGTH",
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

SUPPRESSION_KEY_ENV = MASTER_KEYS_ENV


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
    """The suppression hash key, derived from the platform's master keys (`common.keys`)."""
    return MasterKeys.from_env().suppression_key()


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
# A token names one delivery and reveals nothing in clear:
#
#     key id (1 byte) | encrypted (tenant id 16 + delivery id 8) | tag (10 bytes)   = 35 bytes
#
# tag = HMAC-SHA256(tenant's token MAC key, purpose | key id | payload), 80 bits; the payload is
# encrypted with AES-256-CTR under the key id's encryption key, the tag as its IV (a synthetic
# IV: deterministic, and any change to the token changes what the tag must be). The reader
# decrypts with the platform key of that id, then checks the tag with the MAC key of the tenant
# it found: a tenant's sender, which holds only its own MAC key, cannot mint a token for another
# tenant, and an unsubscribe token is not a bounce token. 35 bytes are 56 base32 characters, no
# padding: `bounces+<token>` is exactly the 64 characters a local part may have. Lower case,
# because local parts of return-path addresses may be case-folded on the way back.


class TokenPurpose(StrEnum):
    UNSUBSCRIBE = "u"
    BOUNCE = "b"
    REPLY = "r"
    """A tenant's reply address (`replies+<token>`, sender/replies.py): delivery id 0."""


_MAC_BYTES = 10
_PAYLOAD_BYTES = 24
TOKEN_LENGTH = 56
"""Characters in a token."""


def _tag(mac_key: bytes, purpose: TokenPurpose, kid: int, payload: bytes) -> bytes:
    mac = _hmac(mac_key).copy()
    mac.update(purpose.value.encode() + bytes([kid]) + payload)
    return mac.digest()[:_MAC_BYTES]


@functools.lru_cache(maxsize=256)
def _hmac(mac_key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with `mac_key`, copied per token: the sender makes two tokens a
    message, and a one-shot `hmac.digest` looks the digest up in OpenSSL at every call,
    which cost more than the MAC itself."""
    return hmac.new(mac_key, digestmod=hashlib.sha256)


def _crypt(encryption_key: bytes, tag: bytes, data: bytes) -> bytes:
    """AES-256-CTR with the tag as IV; the same call encrypts and decrypts.

    The counter blocks are made here and encrypted by one cached ECB context per key: CTR is
    exactly that (a token's IV ends in 6 zero bytes: its two blocks never carry into the tag),
    and a new `Cipher` per token (the sender makes two a message) cost more than the AES."""
    iv = tag + bytes(16 - len(tag))
    base = int.from_bytes(iv, "big")
    blocks = b"".join((base + i).to_bytes(16, "big") for i in range((len(data) + 15) // 16))
    stream = _ecb(encryption_key).update(blocks)[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


@functools.lru_cache(maxsize=256)
def _ecb(encryption_key: bytes) -> CipherContext:
    """An AES-ECB encryption context of `key`, reused: ECB keeps no state between whole blocks."""
    return Cipher(algorithms.AES(encryption_key), modes.ECB()).encryptor()  # noqa: S305 (CTR)


def make_token(key: TokenKey, purpose: TokenPurpose, tenant_id: uuid.UUID, delivery_id: int) -> str:
    payload = tenant_id.bytes + delivery_id.to_bytes(8, "big")
    tag = _tag(key.mac, purpose, key.kid, payload)
    raw = bytes([key.kid]) + _crypt(key.encryption, tag, payload) + tag
    return _base32(raw)


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_BASE32_PAIRS = [a + b for a in _BASE32 for b in _BASE32]


def _base32(raw: bytes) -> str:
    """`base64.b32encode(raw)` in lower case, for 35 bytes (280 bits: 28 pairs of 5-bit
    characters, no padding): the standard library's is pure Python and generic, and cost
    more than the token's AES and HMAC together."""
    value = int.from_bytes(raw, "big")
    return "".join([_BASE32_PAIRS[(value >> shift) & 1023] for shift in range(270, -1, -10)])


REPLY_PREFIX = "replies+"
"""Local part prefix of a tenant's reply address (sender/replies.py)."""


def reply_address(key: TokenKey, tenant_id: uuid.UUID, domain: str) -> str:
    """The tenant's reply address at `domain` (any domain whose `replies+` mail the intake
    receives: the return-path domain's MX, or the relay's transport for it): where the
    customer's mailbox server copies inbound mail. Names the tenant only (delivery id 0)."""
    return f"{REPLY_PREFIX}{make_token(key, TokenPurpose.REPLY, tenant_id, 0)}@{domain.lower()}"


def read_token(keys: MasterKeys, purpose: TokenPurpose, token: str) -> tuple[uuid.UUID, int] | None:
    """(tenant id, delivery id), or None for anything that is not a valid token: malformed,
    forged, of the other purpose, or under a key id no longer in the ring."""
    text = token.strip().upper()
    if len(text) != TOKEN_LENGTH or not text.isalnum():
        return None
    try:
        raw = base64.b32decode(text)
    except ValueError:
        return None
    kid, sealed, tag = raw[0], raw[1 : 1 + _PAYLOAD_BYTES], raw[1 + _PAYLOAD_BYTES :]
    encryption = keys.token_encryption(kid)
    if encryption is None:
        return None
    payload = _crypt(encryption, tag, sealed)
    tenant_id = uuid.UUID(bytes=payload[:16])
    mac_key = keys.token_mac(kid, tenant_id)
    if mac_key is None or not hmac.compare_digest(tag, _tag(mac_key, purpose, kid, payload)):
        return None
    return tenant_id, int.from_bytes(payload[16:], "big")
