"""DKIM keys of a SendingDomain: generation, selector names, the Secret layout, the TXT value.

The operator writes one Secret per SendingDomain (`<sendingdomain>-dkim`, owned by it); the
sender reads it to sign. Layout of `Secret.data` (values base64 as in any Secret):

    keys.json        {"version": 1, "rotateToken": str | null, "keys": [KEY, ...]}
    <selector>.pem   PKCS#8 PEM private key of that selector (absent once revoked)

    KEY = {"selector", "algorithm": "rsa2048" | "ed25519",
           "state": "Pending" | "Active" | "Retiring" | "Revoked",
           "createdAt", "verifiedAt", "activatedAt", "retireAt"}   (ISO 8601 UTC or null)

Stable public surface for signers (`common/dkim/signer.py`):

    keys = load_keys_from_secret(secret["data"])     # list[DkimKey]
    for key in signing_keys(keys):                    # the Active key of each algorithm
        key.selector, key.algorithm, key.private_key_pem, key.dkimpy_private_key()

Only `Active` keys sign. A key becomes Active only after its record was verified on every
authoritative nameserver and one TTL passed (see `common.dkim.rotation`), so a signature is never
made with a key DNS does not serve yet.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

INDEX_KEY = "keys.json"
ALGORITHMS = ("rsa2048", "ed25519")
# The selector carries a short algorithm tag: pm-rsa-20261129, pm-ed-20261129.
_ALGORITHM_TAG = {"rsa2048": "rsa", "ed25519": "ed"}
_KEY_TYPE = {"rsa2048": "rsa", "ed25519": "ed25519"}


class KeyState(StrEnum):
    PENDING = "Pending"
    """Generated and published; not signing until verified everywhere plus one TTL."""
    ACTIVE = "Active"
    """The signing key of its algorithm (at most one per algorithm)."""
    RETIRING = "Retiring"
    """Replaced; still published so messages in flight verify, until retire_at."""
    REVOKED = "Revoked"
    """Published with an empty p= (RFC 6376 3.6.1); private key deleted."""


class DkimKeyError(ValueError):
    """The Secret does not hold a readable key set; the message says what is wrong."""


@dataclass(frozen=True)
class DkimKey:
    """One DKIM key pair and its place in the rotation."""

    selector: str
    algorithm: str
    state: KeyState
    created_at: datetime
    private_key_pem: bytes | None
    verified_at: datetime | None = None
    activated_at: datetime | None = None
    retire_at: datetime | None = None

    @property
    def key_type(self) -> str:
        """The k= tag: rsa or ed25519."""
        return _KEY_TYPE[self.algorithm]

    def public_key_b64(self) -> str:
        """p= value: DER SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519 (RFC 8463)."""
        if self.private_key_pem is None:
            return ""
        # Only the public half is read here, from a key we generated ourselves: skip the RSA
        # consistency check (a primality test costing 50-600 ms per call under load, on the
        # operator's event loop at every pass) that guards signing with foreign keys.
        private = serialization.load_pem_private_key(
            self.private_key_pem, password=None, unsafe_skip_rsa_key_validation=True
        )
        public = private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(raw).decode()

    def dns_value(self) -> str:
        """The TXT value at <selector>._domainkey.<domain>; revoked keys keep an empty p=."""
        public = "" if self.state == KeyState.REVOKED else self.public_key_b64()
        return f"v=DKIM1; k={self.key_type}; p={public}"

    def dkimpy_private_key(self) -> bytes:
        """The private key as dkimpy's `dkim.sign(privkey=...)` wants it.

        RSA: the PEM. Ed25519: base64 of the raw 32-byte seed (dkimpy's RFC 8463 format).
        """
        if self.private_key_pem is None:
            raise DkimKeyError(f"selector {self.selector} is revoked: its private key is gone")
        if self.algorithm != "ed25519":
            return self.private_key_pem
        private = serialization.load_pem_private_key(self.private_key_pem, password=None)
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(raw)


@dataclass(frozen=True)
class KeySet:
    """Everything in the Secret: the keys and the last rotate-now token handled."""

    keys: tuple[DkimKey, ...] = ()
    rotate_token: str | None = None


def generate_private_key(algorithm: str) -> bytes:
    """A new PKCS#8 PEM private key: RSA-2048 (e=65537) or Ed25519."""
    if algorithm == "rsa2048":
        private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
    elif algorithm == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimKeyError(f"unknown DKIM algorithm {algorithm!r}: use one of {ALGORITHMS}")
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def selector_name(prefix: str, algorithm: str, day: datetime, taken: Iterable[str] = ()) -> str:
    """`<prefix>-<rsa|ed>-<yyyymmdd>`; a second key the same day gets `-2`, then `-3`, ..."""
    base = f"{prefix}-{_ALGORITHM_TAG[algorithm]}-{day.astimezone(UTC):%Y%m%d}"
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


def new_key(
    prefix: str,
    algorithm: str,
    now: datetime,
    taken: Iterable[str] = (),
    generate: Callable[[str], bytes] = generate_private_key,
) -> DkimKey:
    """A freshly generated Pending key under a dated selector not in `taken`; `generate` makes
    its private key (the operator's spare keys, `common.dkim.spare`)."""
    return DkimKey(
        selector=selector_name(prefix, algorithm, now, taken),
        algorithm=algorithm,
        state=KeyState.PENDING,
        created_at=now,
        private_key_pem=generate(algorithm),
    )


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def load_key_set(data: Mapping[str, str] | None) -> KeySet:
    """Parse `Secret.data` (base64 values); an empty or missing Secret is an empty KeySet."""
    if not data or INDEX_KEY not in data:
        return KeySet()
    try:
        index = json.loads(base64.b64decode(data[INDEX_KEY]))
        keys = []
        for item in index["keys"]:
            selector = str(item["selector"])
            algorithm = str(item["algorithm"])
            if algorithm not in ALGORITHMS:
                raise DkimKeyError(f"unknown algorithm {algorithm!r} for selector {selector}")
            state = KeyState(item["state"])
            pem_b64 = data.get(f"{selector}.pem")
            pem = base64.b64decode(pem_b64) if pem_b64 else None
            if pem is None and state != KeyState.REVOKED:
                raise DkimKeyError(f"{selector}.pem is missing for a {state} key")
            created = _time(item.get("createdAt"))
            if created is None:
                raise DkimKeyError(f"selector {selector} has no createdAt")
            keys.append(
                DkimKey(
                    selector=selector,
                    algorithm=algorithm,
                    state=state,
                    created_at=created,
                    private_key_pem=pem,
                    verified_at=_time(item.get("verifiedAt")),
                    activated_at=_time(item.get("activatedAt")),
                    retire_at=_time(item.get("retireAt")),
                )
            )
        token = index.get("rotateToken")
    except DkimKeyError:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise DkimKeyError(f"{INDEX_KEY} is malformed ({type(error).__name__})") from None
    return KeySet(tuple(keys), str(token) if token is not None else None)


def load_keys_from_secret(data: Mapping[str, str] | None) -> list[DkimKey]:
    """Every key in the Secret (`Secret.data`, base64 values), in stored order."""
    return list(load_key_set(data).keys)


def signing_keys(keys: Iterable[DkimKey]) -> list[DkimKey]:
    """The keys to sign with: the Active key of each algorithm (RSA first, then Ed25519)."""
    active = [key for key in keys if key.state == KeyState.ACTIVE]
    return sorted(active, key=lambda key: ALGORITHMS.index(key.algorithm))


def secret_data(key_set: KeySet) -> dict[str, str]:
    """`Secret.data` for a KeySet: the index plus one PEM per key that still has one."""
    index = {
        "version": 1,
        "rotateToken": key_set.rotate_token,
        "keys": [
            {
                "selector": key.selector,
                "algorithm": key.algorithm,
                "state": str(key.state),
                "createdAt": _iso(key.created_at),
                "verifiedAt": _iso(key.verified_at),
                "activatedAt": _iso(key.activated_at),
                "retireAt": _iso(key.retire_at),
            }
            for key in key_set.keys
        ],
    }
    data = {INDEX_KEY: base64.b64encode(json.dumps(index, sort_keys=True).encode()).decode()}
    for key in key_set.keys:
        if key.private_key_pem is not None:
            data[f"{key.selector}.pem"] = base64.b64encode(key.private_key_pem).decode()
    return data


def revoke(key: DkimKey) -> DkimKey:
    """The key with its private half dropped and state Revoked."""
    return replace(key, state=KeyState.REVOKED, private_key_pem=None)
