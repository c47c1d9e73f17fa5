"""How commands print: an aligned table (or `key: value` lines) for people, `-o json` for
scripts (the API's own JSON, a list's items as one array after following every page)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["age", "conditions", "emit", "emit_list", "field", "table"]

Row = Sequence[str]


def table(headers: Row, rows: Iterable[Row], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rows = [list(r) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def emit(output: str, body: Any, human: Callable[[Any], None]) -> None:
    if output == "json":
        json.dump(body, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        human(body)


def emit_list(
    output: str, items: Iterable[dict[str, Any]], headers: Row, row: Callable[[dict[str, Any]], Row]
) -> None:
    listed = list(items)  # every page, fetched before anything is printed
    emit(output, listed, lambda found: table(headers, [row(i) for i in found]))


def field(obj: Any, *path: str | int, default: str = "") -> str:
    """A nested value as text ('' when any step is missing)."""
    for step in path:
        if isinstance(obj, dict) and isinstance(step, str):
            obj = obj.get(step)
        elif isinstance(obj, list) and isinstance(step, int) and -len(obj) <= step < len(obj):
            obj = obj[step]
        else:
            return default
    if obj is None:
        return default
    if isinstance(obj, bool):
        return "yes" if obj else "no"
    return str(obj)


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    """The status conditions as {type: status}."""
    found = (obj.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): str(c.get("status")) for c in found if isinstance(c, dict)}


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """'5m', '3h', '2d' since an RFC 3339 time, as kubectl shows ages."""
    if not timestamp:
        return ""
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
