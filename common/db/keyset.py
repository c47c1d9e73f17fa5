"""Opaque cursors for keyset pagination over `(created_at, key)`, oldest first.

A page is `WHERE (created_at, key) > (cursor's) ORDER BY created_at, key`: stable while rows
are added or removed, and as fast on the thousandth page as on the first. The cursor is the
last row's pair, base64url-encoded behind a prefix naming the list it belongs to; it is only a
position, so a forged one can move within the caller's own rows and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

__all__ = ["decode", "encode"]

_MAX = 200


def encode(prefix: str, created_at: datetime, key: str) -> str:
    raw = f"{created_at.isoformat()}|{key}".encode()
    return prefix + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode(prefix: str, cursor: str) -> tuple[datetime, str] | None:
    """The position a cursor of `prefix` names; None for anything else."""
    if not cursor.startswith(prefix) or len(cursor) > _MAX:
        return None
    body = cursor[len(prefix) :]
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        at, _, key = text.partition("|")
        when = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if when.tzinfo is None or not key:
        return None
    return when, key
