"""Pure helpers of the audit log (cursors) and the GDPR erasure (replacing an address in JSON)."""

from __future__ import annotations

import re

import pytest

from penguinmails.common.db.audit import AuditError, decode_cursor, encode_cursor
from penguinmails.common.db.gdpr import ERASED, _like, _replace


def test_cursor_round_trips_and_refuses_anything_else() -> None:
    for last_id in (1, 42, 2**62):
        cursor = encode_cursor(last_id)
        assert "=" not in cursor and decode_cursor(cursor) == last_id
    for forged in ("", "abc", encode_cursor(5)[:-2], "YXUxLi0x", "eHl6LjU"):  # au1.-1, xyz.5
        with pytest.raises(AuditError) as caught:
            decode_cursor(forged)
        assert caught.value.field == "cursor"


def test_address_is_replaced_in_every_string_of_a_json_document() -> None:
    pattern = re.compile(re.escape("jane.doe@example.com"), re.IGNORECASE)
    document = {
        "referred_by": "Jane.Doe@Example.com",
        "notes": ["call jane.doe@example.com", 3, None, {"jane.doe@example.com": "key too"}],
        "janexdoe@example.com": "the dot is literal",
    }
    assert _replace(document, pattern) == {
        "referred_by": ERASED,
        "notes": [f"call {ERASED}", 3, None, {ERASED: "key too"}],
        "janexdoe@example.com": "the dot is literal",
    }


def test_like_patterns_match_literally() -> None:
    assert _like(["a_b%c\\d@example.com"]) == ["%a\\_b\\%c\\\\d@example.com%"]
