"""Contact import: CSV in, COPY into PostgreSQL, malformed rows reported by line and skipped.

The CSV has a header row with an `email` column (any case); every other column becomes a
contact field (`fields` jsonb) available to the templates. A row is skipped, with its line
number and the reason, when its address is malformed, its bytes are not UTF-8, it has the wrong
number of columns, a cell holds a control character (named by its column: PostgreSQL cannot
store NUL), or its address is already in the file or in the list. Everything else is
imported: each chunk is copied into a temporary table with COPY, then inserted into `contacts`
with `ON CONFLICT DO NOTHING`, so rows already in the list are found by the database itself.

The file is read as a stream (one chunk of `CHUNK_ROWS` contacts or `CHUNK_CHARS` characters in
memory at a time, plus the addresses seen, for duplicates): a file's size is bounded by the
disk, not the importer's memory. A field longer than the csv module's limit
(`csv.field_size_limit()`, 131072 characters), or any other CSV syntax error, ends the import at
that line: the parser cannot tell where that row ends, so nothing after it can be trusted. The
good rows before it are imported (committed), the error names the line and says the rest was
not imported; importing the fixed file again is safe, as rows already in the list are skipped.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from penguinmails.common.db import AnyConnection
from penguinmails.common.suppression import address_hash, normalize_address
from penguinmails.common.text import control_character

if TYPE_CHECKING:
    from _csv import Reader

__all__ = ["ImportReport", "RowError", "ensure_list", "import_contacts", "parse_contacts"]

CHUNK_ROWS = 5000
CHUNK_CHARS = 8_000_000  # and at most this much field text: rows can be 131072 characters each

# Deliberately plain: one @, no spaces or angle brackets, a dotted domain. Receivers decide the
# rest; this only keeps obvious garbage (typos, names in the address column) out of the ledger.
_ADDRESS = re.compile(
    r"^[^@\s<>(),;:\"\[\]]{1,64}@[A-Za-z0-9\u00a0-\uffff]"
    r"([-A-Za-z0-9\u00a0-\uffff]*[A-Za-z0-9\u00a0-\uffff])?"
    r"(\.[A-Za-z0-9\u00a0-\uffff]([-A-Za-z0-9\u00a0-\uffff]*[A-Za-z0-9\u00a0-\uffff])?)+$"
)


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str
    field: str | None = None
    """The column at fault (`email`), `header`, or None for the whole row."""

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ParsedContact:
    line: int
    email: str
    address_hash: bytes
    fields: dict[str, str]


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.errors)


def _has_bad_bytes(values: list[str]) -> bool:
    # surrogateescape turns undecodable bytes into lone surrogates U+DC80..U+DCFF.
    return any(any("\udc80" <= ch <= "\udcff" for ch in value) for value in values)


def parse_contacts(source: BinaryIO, key: bytes) -> Iterator[ParsedContact | RowError]:
    """Validate a CSV stream's rows as they are read: each good contact, or a line's error."""
    # utf-8-sig drops a byte order mark; surrogateescape keeps undecodable bytes for the check.
    text = io.TextIOWrapper(source, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _rows(csv.reader(text), key)
    finally:
        text.detach()  # the caller's stream stays open (the wrapper would close it)


def _rows(reader: Reader, key: bytes) -> Iterator[ParsedContact | RowError]:
    try:
        header = next(reader)
    except StopIteration:
        yield RowError(1, "the file is empty: expected a header row with an email column", "header")
        return
    except csv.Error as error:
        yield _syntax_error(1, error)
        return
    names = [name.strip() for name in header]
    lowered = [name.lower() for name in names]
    if "email" not in lowered:
        yield RowError(1, f"no email column in the header (columns: {', '.join(names)})", "header")
        return
    email_index = lowered.index("email")
    bad_name = next((name for name in names if control_character(name)), None)
    if bad_name is not None:
        found = control_character(bad_name)
        yield RowError(1, f"a column name holds the control character {found}", "header")
        return
    first_line: dict[str, int] = {}
    line = reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield _syntax_error(start, error)
            return
        line = reader.line_num
        if not row or all(not value.strip() for value in row):
            continue
        if _has_bad_bytes(row):
            yield RowError(start, "not valid UTF-8: save the file as UTF-8")
            continue
        if len(row) != len(names):
            yield RowError(start, f"{len(row)} columns, the header has {len(names)}")
            continue
        controlled = _control_character(names, row)
        if controlled is not None:
            yield controlled(start)
            continue
        email = row[email_index].strip()
        if not _ADDRESS.match(email) or len(email) > 254:
            yield RowError(start, f"malformed address {email!r}", "email")
            continue
        try:
            normalized = normalize_address(email)
        except ValueError:
            yield RowError(start, f"malformed address {email!r}", "email")
            continue
        if normalized in first_line:
            yield RowError(start, f"duplicate of line {first_line[normalized]} ({email})", "email")
            continue
        first_line[normalized] = start
        fields = {
            name: value
            for i, (name, value) in enumerate(zip(names, row, strict=True))
            if i != email_index and name
        }
        yield ParsedContact(start, email, address_hash(key, email), fields)


def _control_character(names: list[str], row: list[str]) -> Callable[[int], RowError] | None:
    """A row's first cell holding a control character (PostgreSQL cannot store NUL), as the
    error naming its column; None when the row is clean."""
    for name, value in zip(names, row, strict=True):
        found = control_character(value)
        if found:
            return lambda line: RowError(
                line, f"the control character {found} in column {name}: remove it", name
            )
    return None


def _syntax_error(line: int, error: csv.Error) -> RowError:
    limit = csv.field_size_limit()
    if "field larger than field limit" in str(error):
        reason = (
            f"a field is longer than {limit} characters (the CSV limit; often a quote that is "
            "never closed)"
        )
    else:
        reason = f"CSV syntax error: {error}"
    return RowError(
        line,
        f"{reason}; this line and the rest of the file were not imported: fix it and import "
        "the file again (rows already imported are skipped)",
    )


def _chunks(
    items: Iterator[ParsedContact | RowError], errors: list[RowError], rows: int = CHUNK_ROWS
) -> Iterator[list[ParsedContact]]:
    """Good contacts `rows` or `CHUNK_CHARS` at a time; errors go to `errors` as met."""
    chunk: list[ParsedContact] = []
    chars = 0
    for item in items:
        if isinstance(item, RowError):
            errors.append(item)
            continue
        chunk.append(item)
        chars += len(item.email) + sum(len(k) + len(v) for k, v in item.fields.items())
        if len(chunk) == rows or chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


async def ensure_list(conn: AnyConnection, list_name: str) -> uuid.UUID:
    """The id of the list `list_name` of the current tenant scope, created if missing."""
    list_id: uuid.UUID = await conn.fetchval(
        """
        WITH created AS (
            INSERT INTO contact_lists (name) VALUES ($1)
            ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id
        )
        SELECT id FROM created UNION ALL SELECT id FROM contact_lists WHERE name = $1
        LIMIT 1
        """,
        list_name,
    )
    return list_id


async def import_contacts(
    conn: AnyConnection,
    list_name: str,
    source: BinaryIO | bytes,
    key: bytes,
    *,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportReport:
    """Import into `list_name` (created if missing) within the caller's tenant scope.

    `progress` is called after each chunk (`chunk_rows` contacts) with the number of data rows
    read so far: contacts imported or found in the list, and rows skipped."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    report = ImportReport()
    list_id = await ensure_list(conn, list_name)
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS contact_import "
        "(line integer, email text, address_hash bytea, fields jsonb) ON COMMIT DROP"
    )
    done = already = 0
    for chunk in _chunks(parse_contacts(stream, key), report.errors, chunk_rows):
        await conn.execute("TRUNCATE contact_import")
        await conn.copy_records_to_table(
            "contact_import",
            records=[(c.line, c.email, c.address_hash, json.dumps(c.fields)) for c in chunk],
            columns=["line", "email", "address_hash", "fields"],
        )
        inserted = await conn.fetch(
            """
            INSERT INTO contacts (list_id, email, address_hash, fields)
            SELECT $1, email, address_hash, fields FROM contact_import ORDER BY line
            ON CONFLICT (list_id, lower(email)) DO NOTHING
            RETURNING lower(email) AS email
            """,
            list_id,
        )
        new = {row["email"] for row in inserted}
        for contact in chunk:
            if contact.email.lower() not in new:
                report.errors.append(
                    RowError(
                        contact.line, f"{contact.email} is already in list {list_name}", "email"
                    )
                )
                already += 1
        report.imported += len(inserted)
        done += len(chunk)
        if progress is not None:
            # report.errors holds the rows skipped so far and the chunks' "already in list"
            # contacts, which `done` counts already.
            progress(done + len(report.errors) - already)
    report.errors.sort(key=lambda error: error.line)
    return report
