"""Setup shared by the tests that run the sender program without the operator: a tenant's row as
the operator writes it, and a DKIM key in a folder laid out like the mounted Secret."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)


async def tenant_row(pool: asyncpg.Pool, name: str, tier: str = "starter") -> uuid.UUID:
    """The tenant's row as the operator writes it (namespace tenant-<name>)."""
    return await upsert_tenant(
        pool,
        name=name,
        tier=tier,
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )


def dkim_folder(folder: Path, selector: str, algorithm: str) -> DkimKey:
    """A fresh active key written into `folder` as the sender sees its mounted DKIM Secret."""
    folder.mkdir()
    key = DkimKey(
        selector, algorithm, KeyState.ACTIVE, datetime.now(UTC), generate_private_key(algorithm)
    )
    for item, value in secret_data(KeySet((key,))).items():
        (folder / item).write_bytes(base64.b64decode(value))
    return key
