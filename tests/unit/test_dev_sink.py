"""The benchmarks' discarding SMTP receiver (`devstack.sink._Discarding`): pipelined commands
answered in order, the end of DATA found wherever the reads split it, and a dot-stuffed line
inside a message not taken for its end."""

from __future__ import annotations

import pytest

from penguinmails.devstack.sink import _Discarding


class _Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def _codes(written: bytes) -> list[int]:
    """The final reply codes (continuation lines of EHLO left out)."""
    return [int(line[:3]) for line in written.split(b"\r\n") if line[3:4] == b" "]


MESSAGE = b"Subject: x\r\n\r\nline one\r\n..a stuffed dot\r\n.\r\n"
SESSION = (
    b"EHLO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
    + MESSAGE
    + b"MAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n.\r\nQUIT\r\n"
)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, len(SESSION)])
def test_a_pipelined_session_in_reads_of_any_size(size: int) -> None:
    transport = _Transport()
    session = _Discarding()
    session.connection_made(transport)  # type: ignore[arg-type]
    for start in range(0, len(SESSION), size):
        session.data_received(SESSION[start : start + size])
    # greeting, EHLO, MAIL RCPT DATA end-of-data twice (the second message empty), QUIT
    first, second = [250, 250, 354, 250], [250, 250, 354, 250]
    assert _codes(bytes(transport.written)) == [220, 250, *first, *second, 221]
    assert b"250-PIPELINING" in transport.written
    assert transport.closed


def test_an_unknown_command_is_refused_and_the_session_goes_on() -> None:
    transport = _Transport()
    session = _Discarding()
    session.connection_made(transport)  # type: ignore[arg-type]
    session.data_received(b"VRFY x\r\nNOOP\r\n")
    assert _codes(bytes(transport.written)) == [220, 502, 250]
    assert not transport.closed
