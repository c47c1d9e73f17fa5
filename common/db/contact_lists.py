"""Contact lists and contacts as the customer API shows and changes them (import is
`penguinmails.common.db.contacts`, erasure of a person everywhere `penguinmails.common.db.gdpr`).

Every function runs inside the caller's tenant scope (`tenant_connection()`): row-level security
shows only the tenant's own rows, so another tenant's id is simply not found. Pages are oldest
first, keyset-paginated on `(created_at, id)` (`penguinmails.common.db.keyset`).

Deleting a contact removes that one row from its list: its deliveries keep their keyed hash and
lose the link (`contact_id` set null, so a queued one is no longer sent: the sender finds no
address), and the address stays everywhere else it is (other lists, the ledger's replies, the
audit log). Deleting a list deletes its contacts the same way.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from penguinmails.common.db import AnyConnection

__all__ = [
    "ContactList",
    "ContactRow",
    "create_list",
    "delete_contact",
    "delete_list",
    "get_contact",
    "list_contacts",
    "list_lists",
]


@dataclass(frozen=True)
class ContactList:
    id: uuid.UUID
    name: str
    contacts: int
    created_at: datetime


@dataclass(frozen=True)
class ContactRow:
    id: uuid.UUID
    list_id: uuid.UUID
    list_name: str
    email: str
    fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime


_LIST = """
    SELECT l.id, l.name, l.created_at,
           (SELECT count(*) FROM contacts c WHERE c.list_id = l.id) AS contacts
    FROM contact_lists l
"""
_CONTACT = """
    SELECT c.id, c.list_id, l.name AS list_name, c.email, c.fields, c.created_at, c.updated_at
    FROM contacts c JOIN contact_lists l ON l.id = c.list_id
"""


def _list(row: asyncpg.Record) -> ContactList:
    return ContactList(row["id"], row["name"], int(row["contacts"]), row["created_at"])


def _contact(row: asyncpg.Record) -> ContactRow:
    return ContactRow(
        id=row["id"],
        list_id=row["list_id"],
        list_name=row["list_name"],
        email=row["email"],
        fields=json.loads(row["fields"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def create_list(conn: AnyConnection, name: str) -> ContactList | None:
    """The new list; None when the tenant has a list of that name already."""
    row = await conn.fetchrow(
        "INSERT INTO contact_lists (name) VALUES ($1) ON CONFLICT (tenant_id, name) DO NOTHING "
        "RETURNING id, name, created_at, 0 AS contacts",
        name,
    )
    return _list(row) if row is not None else None


async def list_lists(
    conn: AnyConnection, *, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[ContactList]:
    """Up to `limit` lists after the position `after` (None: from the first)."""
    rows = await conn.fetch(
        _LIST + "WHERE ($1::timestamptz IS NULL OR (l.created_at, l.id) > ($1, $2::uuid)) "
        "ORDER BY l.created_at, l.id LIMIT $3",
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_list(r) for r in rows]


async def delete_list(conn: AnyConnection, list_id: uuid.UUID) -> bool:
    status = await conn.execute("DELETE FROM contact_lists WHERE id = $1", list_id)
    return status.endswith(" 1")


async def list_contacts(
    conn: AnyConnection,
    *,
    list_name: str | None,
    address_hash: bytes | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[ContactRow]:
    """Up to `limit` contacts after `after`, of the list named `list_name` and with the
    address of `address_hash` (the keyed hash of the normalized address) when given."""
    rows = await conn.fetch(
        _CONTACT + "WHERE ($1::text IS NULL OR l.name = $1) "
        "AND ($2::bytea IS NULL OR c.address_hash = $2) "
        "AND ($3::timestamptz IS NULL OR (c.created_at, c.id) > ($3, $4::uuid)) "
        "ORDER BY c.created_at, c.id LIMIT $5",
        list_name,
        address_hash,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_contact(r) for r in rows]


async def get_contact(conn: AnyConnection, contact_id: uuid.UUID) -> ContactRow | None:
    row = await conn.fetchrow(_CONTACT + "WHERE c.id = $1", contact_id)
    return _contact(row) if row is not None else None


async def delete_contact(conn: AnyConnection, contact_id: uuid.UUID) -> bool:
    status = await conn.execute("DELETE FROM contacts WHERE id = $1", contact_id)
    return status.endswith(" 1")
