"""Recipient mail servers on loopback: accept and store what arrives, or refuse chosen addresses.

    with SinkServer() as sink:                       # runs in its own thread
        sink.reply_for["bad@example.test"] = (550, "5.1.1 <bad@example.test>: no such user")
        sink.reply_once["slow@example.test"] = (451, "4.7.1 try again later")  # then accepted
        ... send to 127.0.0.1:sink.port ...
        sink.messages        # list of StoredMessage (envelope + raw bytes), in arrival order

`reply_for` answers every RCPT of that address with the given code (a 5xx is permanent);
`reply_once` answers the first `count` RCPTs (default 1) and then accepts, like a greylisting
server. A `on_message` callback sees each stored message (e.g. to feed bounce intake).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import uvloop
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from penguinmails.devstack.ports import LOOPBACK, free_port
from penguinmails.devstack.process import Startable


@dataclass(frozen=True)
class StoredMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class _Pipelining:
    """Advertises PIPELINING (RFC 2920), as Postfix and MailU do: aiosmtpd reads commands one
    line at a time from its buffer, so pipelined ones are answered in order."""

    async def handle_EHLO(  # noqa: N802 (aiosmtpd's hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


@dataclass
class _Handler(_Pipelining):
    reply_for: dict[str, tuple[int, str]] = field(default_factory=dict)
    reply_once: dict[str, tuple[int, str]] = field(default_factory=dict)
    once_counts: dict[str, int] = field(default_factory=dict)
    messages: list[StoredMessage] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)
    on_message: Callable[[StoredMessage], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        key = address.lower()
        with self.lock:
            if key in self.reply_for:
                code, text = self.reply_for[key]
                self.refused.append((key, code))
                return f"{code} {text}"
            if key in self.reply_once:
                remaining = self.once_counts.get(key, 1)
                if remaining > 0:
                    self.once_counts[key] = remaining - 1
                    code, text = self.reply_once[key]
                    self.refused.append((key, code))
                    return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        message = StoredMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=content if isinstance(content, bytes) else content.encode(),
        )
        with self.lock:
            self.messages.append(message)
        if self.on_message is not None:
            self.on_message(message)
        return "250 2.0.0 stored"


class SinkServer(Startable):
    """An aiosmtpd server in a background thread that stores every accepted message."""

    def __init__(
        self, port: int | None = None, *, hostname: str = "sink.penguinmails.test"
    ) -> None:
        self.host = LOOPBACK
        self._port = port or free_port()
        self.handler = _Handler()
        self._controller = Controller(
            self.handler,
            hostname=self.host,
            port=self._port,
            server_hostname=hostname,
            data_size_limit=50 * 1024 * 1024,
        )
        self._started = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, as PostfixServer's relayhost/routes take it."""
        return f"{self.host}:{self._port}"

    @property
    def messages(self) -> list[StoredMessage]:
        with self.handler.lock:
            return list(self.handler.messages)

    @property
    def refused(self) -> list[tuple[str, int]]:
        with self.handler.lock:
            return list(self.handler.refused)

    @property
    def reply_for(self) -> dict[str, tuple[int, str]]:
        return self.handler.reply_for

    @property
    def reply_once(self) -> dict[str, tuple[int, str]]:
        return self.handler.reply_once

    def set_reply_once(self, address: str, code: int, text: str, count: int = 1) -> None:
        with self.handler.lock:
            self.handler.reply_once[address.lower()] = (code, text)
            self.handler.once_counts[address.lower()] = count

    def set_on_message(self, callback: Callable[[StoredMessage], None] | None) -> None:
        self.handler.on_message = callback

    def start(self) -> SinkServer:
        if not self._started:
            self._controller.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._controller.stop()
            self._started = False


class _Discarding(asyncio.Protocol):
    """One SMTP session that accepts every message and keeps nothing: the benchmarks' receiver.

    Not aiosmtpd: that reads DATA a line at a time in Python (0.35-0.44 ms of CPU a 5 KB
    message, measured), so on two cores the receiver took as much CPU as the work measured.
    Here the end of DATA is found by one `find` per read, as a C MTA would. Commands may be
    pipelined (RFC 2920): each line is answered in order, the replies to one read in one write.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._buffer = bytearray()
        self._in_data = False
        self._transport.write(b"220 sink.penguinmails.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        replies: list[bytes] = []
        while True:
            if self._in_data:
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    del buffer[:-4]  # nothing is kept; the tail may start the terminator
                    break
                del buffer[: end + 5]
                self._in_data = False
                replies.append(b"250 2.0.0 discarded\r\n")
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            verb = bytes(buffer[:4]).upper()
            del buffer[: end + 2]
            if verb == b"EHLO":
                replies.append(_EHLO)
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                replies.append(b"250 2.0.0 OK\r\n")
            elif verb == b"DATA":
                replies.append(b"354 end with <CRLF>.<CRLF>\r\n")
                self._in_data = True
                buffer[:0] = b"\r\n"  # a first line of "." ends an empty message
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 bye\r\n")
                self._transport.write(b"".join(replies))
                self._transport.close()
                return
            else:
                replies.append(b"502 5.5.1 not implemented\r\n")
        if replies:
            self._transport.write(b"".join(replies))


_EHLO = (
    b"250-sink.penguinmails.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250 SIZE 52428800\r\n"
)


async def _discard(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Discarding, LOOPBACK, port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    """`python -m penguinmails.devstack.sink PORT`: accept and discard (benchmark receiver, in
    its own process so it does not share the measured process's interpreter lock)."""
    uvloop.run(_discard(int(sys.argv[1])))


if __name__ == "__main__":
    main()
