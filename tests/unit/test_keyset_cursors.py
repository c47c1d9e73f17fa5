"""Pagination cursors are opaque positions: what a page hands out reads back as the same
position, and anything else (another list's cursor, garbage, a naive time) is refused."""

from __future__ import annotations

from datetime import UTC, datetime

from penguinmails.common.db import keyset
from penguinmails.common.db.contact_imports import decode_error_cursor, encode_error_cursor


def test_a_cursor_reads_back_as_its_position_and_only_for_its_list() -> None:
    at = datetime(2026, 12, 2, 0, 5, 1, 123456, tzinfo=UTC)
    cursor = keyset.encode("ct1.", at, "2f1c7a52-0000-4000-8000-000000000001")
    assert keyset.decode("ct1.", cursor) == (at, "2f1c7a52-0000-4000-8000-000000000001")
    assert keyset.decode("cl1.", cursor) is None
    for forged in ("ct1.", "ct1.!!!", "ct1." + "A" * 300, "ct1.MjAyNi0xMi0wMlQwMDowNTowMQ"):
        assert keyset.decode("ct1.", forged) is None, forged
    naive = keyset.encode("ct1.", datetime(2026, 12, 2), "x")
    assert keyset.decode("ct1.", naive) is None


def test_import_error_cursors_are_line_numbers() -> None:
    assert decode_error_cursor(encode_error_cursor(4711)) == 4711
    for forged in ("", "4711", "ie1.", "ie1.LTE", "ct1.NDcxMQ", "ie1." + "M" * 60):
        assert decode_error_cursor(forged) is None, forged
