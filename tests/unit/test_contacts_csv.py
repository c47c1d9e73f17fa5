"""The contact CSV parser reads a stream: rows come out as they are read, a field over the csv
module's limit ends the import at its line, named, with the good rows before it kept."""

from __future__ import annotations

import csv
import io
import itertools

from penguinmails.common.db.contacts import ParsedContact, RowError, parse_contacts

KEY = b"platform-key"


class EndlessCsv(io.RawIOBase):
    """A CSV file that never ends: a parser that reads its whole input never returns."""

    def __init__(self) -> None:
        self.served = 0
        self._pending = b"email,first_name\n"
        self._row = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while len(self._pending) < len(buffer):
            self._row += 1
            self._pending += f"r{self._row}@x.test,R{self._row}\n".encode()
        size = len(buffer)
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self.served += size
        return size


def test_rows_come_out_as_the_stream_is_read() -> None:
    source = EndlessCsv()
    first = list(itertools.islice(parse_contacts(io.BufferedReader(source), KEY), 10))
    assert [c.email for c in first if isinstance(c, ParsedContact)] == [
        f"r{i}@x.test" for i in range(1, 11)
    ]
    # What was read is the reader's buffers (8 KiB each), not the file.
    assert source.served <= 4 * io.DEFAULT_BUFFER_SIZE


def test_a_field_over_the_csv_limit_ends_the_import_at_its_line() -> None:
    limit = csv.field_size_limit()
    data = (
        b"email,note\n"
        b"a@x.test,ok\n"
        b"bad,malformed\n"
        b"b@x.test,ok\n" + b'c@x.test,"' + b"n" * (limit + 1) + b'"\n' + b"d@x.test,after\n"
    )
    source = io.BytesIO(data)
    items = list(parse_contacts(source, KEY))
    assert [c.email for c in items if isinstance(c, ParsedContact)] == ["a@x.test", "b@x.test"]
    errors = [e for e in items if isinstance(e, RowError)]
    assert [e.line for e in errors] == [3, 5]
    assert f"longer than {limit} characters" in errors[1].reason
    assert "the rest of the file were not imported" in errors[1].reason
    assert items[-1] is errors[1]  # nothing after it: d@x.test is not imported
    assert not source.closed  # the caller's file stays the caller's


def test_an_unclosed_quote_is_the_same_error_at_the_line_where_it_opens() -> None:
    # The classic cause: the rest of the file is read as one field until the limit is hit.
    rows = "".join(f"r{i}@x.test,R{i}\n" for i in range(20_000))
    data = f'email,note\na@x.test,"never closed\n{rows}'.encode()
    items = list(parse_contacts(io.BytesIO(data), KEY))
    assert [type(i).__name__ for i in items] == ["RowError"]
    assert isinstance(items[0], RowError) and items[0].line == 2
    assert "often a quote that is never closed" in items[0].reason


def test_byte_order_mark_and_crlf_are_read_from_the_stream() -> None:
    data = "\ufeffEmail,first_name\r\na@x.test,Zoë\r\n".encode()
    items = list(parse_contacts(io.BytesIO(data), KEY))
    assert items == [ParsedContact(2, "a@x.test", items[0].address_hash, {"first_name": "Zoë"})]  # type: ignore[union-attr]


def test_each_skipped_row_names_the_field_at_fault() -> None:
    data = (
        b"Email,first_name\n"
        b"a@x.test,Ann\n"
        b"not-an-address,Bad\n"
        b"b@x.test\n"
        b"c@x.test,Caf\xe9\n"
        b"A@X.TEST,Again\n"
    )
    errors = [e for e in parse_contacts(io.BytesIO(data), KEY) if isinstance(e, RowError)]
    assert [(e.line, e.field) for e in errors] == [
        (3, "email"),
        (4, None),  # the column count: the whole row
        (5, None),  # not UTF-8: the whole row
        (6, "email"),
    ]
    (header,) = parse_contacts(io.BytesIO(b"name\nAnn\n"), KEY)
    assert isinstance(header, RowError) and (header.line, header.field) == (1, "header")
