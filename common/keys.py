"""The platform's master secret and every key derived from it (HKDF-SHA256).

One secret, `PM_SUPPRESSION_KEY` (the name predates its role), held only by platform components
(operator, unsubscribe endpoint, bounce intake, contact import). It is a key ring:

    PM_SUPPRESSION_KEY="2:<secret 2>,1:<secret 1>"     # the first entry is current
    PM_SUPPRESSION_KEY="<secret>"                      # the same as "1:<secret>"

Each entry has a key id (1-255) that every token carries, so a new current key signs new mail
while tokens already out (in mailboxes, in bounces that arrive days later) keep working as long
as their key stays in the ring. Derived, never used directly:

- token encryption, per key id (`penguinmails/token-encryption`): platform, every sender;
- token MAC, per key id and tenant (`penguinmails/token-mac/<tenant id>`): platform and that
  tenant's sender only;
- suppression hash (`penguinmails/suppression-hash`, from the *lowest* key id): platform only.

A tenant's sender gets only its `TokenKey` (current id, encryption key, its own MAC key; see
`PM_TOKEN_KEY`): it can mint tokens for its own deliveries and no other tenant's. The
suppression hash key stays on the platform side (the sender never hashes addresses) and is
separate from every token key; it is anchored to the lowest key id because a stored hash cannot
be recomputed without the address, so keep that entry in the ring (docs/operations.md).
"""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MASTER_KEYS_ENV",
    "TOKEN_KEY_ENV",
    "MasterKeys",
    "TokenKey",
    "derive",
]

MASTER_KEYS_ENV = "PM_SUPPRESSION_KEY"
TOKEN_KEY_ENV = "PM_TOKEN_KEY"  # noqa: S105 (a variable name)
_MIN_SECRET = 16


def derive(secret: bytes, purpose: str, tenant_id: uuid.UUID | None = None) -> bytes:
    """32 bytes for one purpose (and one tenant) from a master secret."""
    info = f"penguinmails/{purpose}" + (f"/{tenant_id}" if tenant_id is not None else "")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode()).derive(secret)


@dataclass(frozen=True)
class TokenKey:
    """What a tenant's sender signs tokens with: one key id's encryption key and its own MAC key."""

    kid: int
    encryption: bytes
    mac: bytes

    def encode(self) -> str:
        """`<kid>:<base64 of encryption + mac>`, the value of PM_TOKEN_KEY."""
        return f"{self.kid}:{base64.b64encode(self.encryption + self.mac).decode('ascii')}"

    @classmethod
    def decode(cls, text: str) -> TokenKey:
        kid, _, raw = text.strip().partition(":")
        try:
            keys = base64.b64decode(raw, validate=True)
            number = int(kid)
        except ValueError:
            keys, number = b"", 0
        if not 1 <= number <= 255 or len(keys) != 64:
            raise ValueError(
                f"{TOKEN_KEY_ENV} is not <key id>:<base64 of 64 bytes>: the operator writes it "
                "into the tenant's Secret penguinmails-sender; do not set it by hand"
            )
        return cls(number, keys[:32], keys[32:])

    @classmethod
    def from_env(cls) -> TokenKey:
        raw = os.environ.get(TOKEN_KEY_ENV, "")
        if not raw:
            raise ValueError(
                f"{TOKEN_KEY_ENV} is not set: the sender reads it from its tenant's Secret "
                "penguinmails-sender, which the operator writes"
            )
        return cls.decode(raw)


@dataclass(frozen=True)
class MasterKeys:
    """The ring: key id -> secret, and which id is current."""

    secrets: dict[int, bytes]
    current: int

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        entries = [entry.strip() for entry in text.split(",") if entry.strip()]
        if not entries:
            raise ValueError(f"{MASTER_KEYS_ENV} is empty: set it to `openssl rand -hex 32`")
        secrets: dict[int, bytes] = {}  # in ring order: the first is current
        for index, entry in enumerate(entries):
            kid_text, colon, secret = entry.partition(":")
            if not colon:
                if len(entries) > 1:
                    raise ValueError(
                        f"{MASTER_KEYS_ENV}: entry {index + 1} has no key id; with several "
                        "keys write each as <id>:<secret>, the current one first"
                    )
                kid_text, secret = "1", entry
            # Messages name the entry, never echo it: a malformed entry may be a secret.
            if not kid_text.isdigit() or not 1 <= int(kid_text) <= 255:
                raise ValueError(
                    f"{MASTER_KEYS_ENV}: entry {index + 1} does not start with a key id 1-255 "
                    "and a colon (<id>:<secret>)"
                )
            if len(secret) < _MIN_SECRET:
                raise ValueError(
                    f"{MASTER_KEYS_ENV}: entry {index + 1} is shorter than {_MIN_SECRET} "
                    "characters; use `openssl rand -hex 32`"
                )
            if int(kid_text) in secrets:
                raise ValueError(f"{MASTER_KEYS_ENV}: key id {kid_text} appears twice")
            secrets[int(kid_text)] = secret.encode("utf-8")
        return cls(secrets, next(iter(secrets)))

    @classmethod
    def from_env(cls) -> MasterKeys:
        raw = os.environ.get(MASTER_KEYS_ENV, "")
        if not raw:
            raise ValueError(
                f"{MASTER_KEYS_ENV} is not set: set it to a long random secret held by the "
                "platform's components only (e.g. `openssl rand -hex 32`)"
            )
        return cls.parse(raw)

    def token_encryption(self, kid: int) -> bytes | None:
        secret = self.secrets.get(kid)
        return derive(secret, "token-encryption") if secret is not None else None

    def token_mac(self, kid: int, tenant_id: uuid.UUID) -> bytes | None:
        secret = self.secrets.get(kid)
        return derive(secret, "token-mac", tenant_id) if secret is not None else None

    def token_key(self, tenant_id: uuid.UUID) -> TokenKey:
        """The current key id's token key for one tenant (what its sender gets)."""
        secret = self.secrets[self.current]
        return TokenKey(
            self.current, derive(secret, "token-encryption"), derive(secret, "token-mac", tenant_id)
        )

    def suppression_key(self) -> bytes:
        """The suppression hash key, from the lowest key id (see the module doc)."""
        return derive(self.secrets[min(self.secrets)], "suppression-hash")
