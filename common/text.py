"""Control characters in text from outside (API requests, CSV files): found before they reach
PostgreSQL, which cannot store NUL in text at all ("invalid byte sequence" / "unsupported
Unicode escape sequence"), or a log, a header or a mail, where the others do harm.

Refused: NUL and the other C0 controls, and DEL. Tab, line feed and carriage return are text
(a campaign's body has lines) and are allowed where text may span lines; one-line values
(query strings, paths, headers) refuse them too.
"""

from __future__ import annotations

import re

__all__ = ["control_character"]

_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_IN_LINE = re.compile(r"[\x00-\x1f\x7f]")


def control_character(value: str, *, one_line: bool = False) -> str | None:
    """The first control character refused in `value`, as `U+XXXX`, or None."""
    found = (_IN_LINE if one_line else _IN_TEXT).search(value)
    return f"U+{ord(found.group()):04X}" if found else None
