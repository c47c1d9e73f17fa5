"""Access tokens: JWTs signed with Ed25519 (EdDSA), a `kid` header, and a key ring.

    PM_API_SIGNING_KEYS="2026-12:<base64 seed>,2026-06:<base64 seed>"   # current key first

Each entry is `<kid>:<base64 of a 32-byte Ed25519 seed>` (`python -m penguinmails.api.http
new-signing-key` prints one). New tokens are signed with the first key; every key of the ring
verifies, so rotating is: put a new key first, wait one access-token lifetime, drop the old
one. Like common/keys.py's ring, entries are named by position in errors, never echoed.

Only EdDSA is accepted and only with a kid of the ring: `alg: none`, HS256 signed with the
public key, and tokens of unknown keys are refused before any signature work.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "SIGNING_KEYS_ENV",
    "AccessClaims",
    "InvalidToken",
    "SigningKeyRing",
    "new_signing_key",
]

SIGNING_KEYS_ENV = "PM_API_SIGNING_KEYS"
ISSUER = "penguinmails"
AUDIENCE = "penguinmails-api"
_ALGORITHM = "EdDSA"
_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class InvalidToken(Exception):  # noqa: N818 (reads as what it is)
    """The token is malformed, forged, expired, or signed by a key not in the ring."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    family_id: uuid.UUID
    expires_at: datetime


def new_signing_key(kid: str) -> str:
    """A new ring entry `<kid>:<base64 seed>`."""
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode('ascii')}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKeyRing:
    keys: dict[str, Ed25519PrivateKey]
    current: str

    @classmethod
    def parse(cls, text: str) -> SigningKeyRing:
        entries = [e.strip() for e in text.split(",") if e.strip()]
        if not entries:
            raise ValueError(
                f"{SIGNING_KEYS_ENV} is empty: set it to the output of "
                "`python -m penguinmails.api.http new-signing-key`"
            )
        keys: dict[str, Ed25519PrivateKey] = {}
        for index, entry in enumerate(entries):
            kid, colon, seed_text = entry.partition(":")
            try:
                seed = base64.b64decode(seed_text, validate=True)
            except ValueError:
                seed = b""
            if not colon or not _KID.match(kid) or len(seed) != 32:
                raise ValueError(
                    f"{SIGNING_KEYS_ENV}: entry {index + 1} is not <kid>:<base64 of a 32-byte "
                    "Ed25519 seed>; make one with `python -m penguinmails.api.http "
                    "new-signing-key`"
                )
            if kid in keys:
                raise ValueError(f"{SIGNING_KEYS_ENV}: key id {kid} appears twice")
            keys[kid] = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(keys, next(iter(keys)))

    def issue(self, user_id: uuid.UUID, family_id: uuid.UUID, ttl: timedelta) -> str:
        now = datetime.now(UTC)
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "fam": str(family_id),
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(
            payload, self.keys[self.current], algorithm=_ALGORITHM, headers={"kid": self.current}
        )

    def verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken("malformed token") from error
        kid = header.get("kid")
        if header.get("alg") != _ALGORITHM or not isinstance(kid, str) or kid not in self.keys:
            raise InvalidToken("token not signed by a current key")
        public: Ed25519PublicKey = self.keys[kid].public_key()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
            return AccessClaims(
                uuid.UUID(str(claims["sub"])),
                uuid.UUID(str(claims["fam"])),
                datetime.fromtimestamp(int(claims["exp"]), UTC),
            )
        except (jwt.PyJWTError, KeyError, ValueError) as error:
            raise InvalidToken(type(error).__name__) from error

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JSON Web Key Set (RFC 8037 OKP keys)."""
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": _ALGORITHM,
                    "use": "sig",
                    "kid": kid,
                    "x": _b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
                }
                for kid, key in self.keys.items()
            ]
        }
