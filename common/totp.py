"""TOTP one-time codes (RFC 6238 over RFC 4226's HOTP): SHA-1, 6 digits, 30-second steps, the
parameters every authenticator app uses by default.

Written here rather than taken from pyotp: it is thirty lines of the RFCs, and the API needs
the time step a code matched (`matching_step`), to refuse the same code twice within its
window, which pyotp's `verify()` does not report.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from urllib.parse import quote, urlencode

__all__ = ["DIGITS", "STEP_SECONDS", "code_at", "matching_step", "new_secret", "otpauth_uri"]

DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1
"""Codes of the previous and next step are accepted too (clock drift, typing time)."""


def new_secret() -> str:
    """160 random bits (RFC 4226's recommended length) in base32, as authenticator apps take."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def _key(secret: str) -> bytes:
    padded = secret.upper() + "=" * (-len(secret) % 8)
    return base64.b32decode(padded)


def hotp(key: bytes, counter: int, digits: int = DIGITS) -> str:
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def step_of(at: float) -> int:
    return int(at // STEP_SECONDS)


def code_at(secret: str, at: float) -> str:
    """The code an authenticator shows at Unix time `at`."""
    return hotp(_key(secret), step_of(at))


def matching_step(secret: str, code: str, at: float | None = None) -> int | None:
    """The time step (around `at`, default now) whose code is `code`, else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    key = _key(secret)
    now = step_of(time.time() if at is None else at)
    found = None
    # Every candidate is compared (constant time each), so timing does not tell which matched.
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(hotp(key, step), code):
            found = step
    return found


def otpauth_uri(secret: str, account: str, issuer: str = "PenguinMails") -> str:
    """The Key URI authenticator apps read from a QR code (Google Authenticator's format)."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        }
    )
    return f"otpauth://totp/{label}?{query}"
