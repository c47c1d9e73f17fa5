"""SMTP transactions on a session aiosmtplib opened, pipelined (RFC 2920) when the relay allows.

    wire = Wire.take_over(smtp, timeout=60)      # after connect, STARTTLS, EHLO and AUTH
    wire.write(b"MAIL FROM:<a@x>\\r\\nRCPT TO:<b@y>\\r\\nDATA\\r\\n")
    mail, rcpt, data = await wire.replies(3)

aiosmtplib opens the session (TLS, SNI, certificate checks, AUTH); it cannot pipeline: its
protocol reads one reply per command, and drops what arrives while a parsed reply waits to be
picked up. So once the session is ready its transport is handed to `Wire`
(`transport.set_protocol`, asyncio's own API), which keeps every reply in arrival order. With
PIPELINING (Postfix and MailU advertise it) a message then costs two writes and two replies
waited for (MAIL, RCPT and DATA together; then the content) instead of four of each: the
sender's largest cost after the signatures was these writes and wake-ups.

Any failure of the connection (lost, closed by the relay, a reply that is not SMTP, no reply
within `timeout`) raises `WireError`, an `OSError`: the pool drops the connection, and the
message's outcome depends on whether its content went out (smtp.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple, cast

import aiosmtplib

__all__ = ["MAX_REPLY_BYTES", "Reply", "Wire", "WireError"]

MAX_REPLY_BYTES = 64 * 1024
"""More unparsed reply text than this is not an SMTP server talking."""


class WireError(ConnectionError):
    """The connection can no longer carry a transaction."""


class Reply(NamedTuple):
    code: int
    text: str


class Wire(asyncio.Protocol):
    """The protocol of one SMTP connection after its greeting: writes commands, queues replies."""

    def __init__(self, transport: asyncio.Transport, *, pipelining: bool, smtputf8: bool) -> None:
        self.transport = transport
        self.pipelining = pipelining
        """The relay advertised PIPELINING: MAIL, RCPT and DATA may go in one write."""
        self.smtputf8 = smtputf8
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: WireError | None = None

    @classmethod
    def take_over(cls, smtp: aiosmtplib.SMTP) -> Wire:
        """The connection of `smtp` (greeted, TLS and AUTH done), from now on driven by a
        `Wire`; `smtp` must not be used any more."""
        if smtp.transport is None or not smtp.is_connected:
            raise WireError("the relay closed the connection during the greeting")
        transport = cast(asyncio.Transport, smtp.transport)
        wire = cls(
            transport,
            pipelining=smtp.supports_extension("pipelining"),
            smtputf8=smtp.supports_extension("smtputf8"),
        )
        transport.set_protocol(wire)
        return wire

    # ------------------------------------------------------------ asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in b" -\r\n":
                self._fail(WireError(f"not an SMTP reply: {line[:80]!r}"))
                return
            self._lines.append(line[4:].strip().decode("utf-8", "surrogateescape"))
            if line[3:4] != b"-":  # the last line of a reply
                self._replies.append(Reply(int(line[:3]), "\n".join(self._lines)))
                self._lines = []
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._fail(WireError("reply too long"))
            return
        if self._replies and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(WireError(f"connection lost: {exc}" if exc else "connection closed by relay"))

    def eof_received(self) -> bool:
        self._fail(WireError("connection closed by relay"))
        return False  # the transport closes itself

    def _fail(self, error: WireError) -> None:
        if self._error is None:
            self._error = error
        if not self.transport.is_closing():
            self.transport.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ------------------------------------------------------------ transactions

    @property
    def usable(self) -> bool:
        """Open, and nothing said by the relay that no command asked for (a 421 while idle:
        it is closing the session, and a reply out of turn would pair with the next command)."""
        return self._error is None and not self._replies and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self.transport.write(data)

    async def replies(self, count: int) -> list[Reply]:
        """The next `count` replies, in the order of the commands written."""
        while len(self._replies) < count:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return [self._replies.popleft() for _ in range(count)]

    async def quit(self) -> None:
        """QUIT, its reply, close."""
        try:
            if self.usable:
                self.write(b"QUIT\r\n")
                await self.replies(1)
        finally:
            self.close()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
