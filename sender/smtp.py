"""A pool of long-lived SMTP connections to one relay (aiosmtplib has none of its own).

Connections are opened lazily up to `size`, reused for up to `max_messages` messages (relays
and receivers cap messages per connection), and replaced when the server drops them. STARTTLS
is used when the relay's mode asks for it (and then required), AUTH when credentials are given.
aiosmtplib opens each session; its transactions then go through `smtp_wire.Wire`, pipelined
when the relay advertises PIPELINING (RFC 2920).

With an egress policy (the sender always has one: the platform's, common.egress), the relay's
name is resolved at each new connection and the connection goes to an address the policy
allows, the TLS certificate still verified against the name: a relay host that passed the
operator's check and later resolves to a forbidden address (DNS rebinding: the cluster's
services, cloud metadata) is refused before anything connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass

import aiosmtplib
import dns.asyncresolver

from penguinmails.common.dkim.signer import to_wire
from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy
from penguinmails.sender.smtp_wire import Wire, WireError

__all__ = ["RelayPool", "SendResult"]


@dataclass(frozen=True)
class SendResult:
    code: int
    text: str
    uncertain: bool = False
    """The connection failed after the message data was sent: the relay may have accepted
    it. Sending it again at once could deliver it twice (see docs/sending.md)."""
    unreachable: bool = False
    """No connection could be made, or each one broke before DATA: nothing was sent (another
    relay may be tried)."""


class _Connection:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.sent = 0


@dataclass
class _Phase:
    """How far one send got: which connection it holds, whether the data went out."""

    conn: _Connection | None = None
    data_sent: bool = False
    reply_timeout: float | None = None
    """Seconds to wait for the relay's replies; None when the send's deadline comes first
    anyway (one timer per message, not two)."""


class RelayPool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        size: int = 8,
        tls: str = "none",
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        max_messages: int = 100,
        helo: str | None = None,
        timeout: float = 60.0,
        egress: EgressPolicy | None = None,
        field: str = "relay host",
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.size = size
        self.tls = tls
        self.username, self.password = username, password
        self.tls_context = tls_context
        self.max_messages = max_messages
        self.helo = helo
        self.timeout = timeout
        self.egress, self.field, self.resolver = egress, field, resolver
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        self._slots = asyncio.Semaphore(size)
        self._open = 0

    async def _socket(self) -> socket.socket | None:
        """A TCP connection to an address of the relay that the egress policy allows, resolved
        now (not when the operator checked the name); None without a policy (aiosmtplib
        resolves and connects itself). Raises DestinationNotAllowedError naming the field."""
        if self.egress is None:
            return None
        addresses = await self.egress.check(self.field, self.host, resolver=self.resolver)
        if not addresses:
            raise OSError(f"{self.field}: {self.host} does not resolve")
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(self.timeout):
                    await loop.sock_connect(sock, (address, self.port))
            except (OSError, TimeoutError) as error:
                sock.close()
                failure = OSError(f"{self.host} ({address}): {error or 'timed out'}")
                continue
            return sock
        assert failure is not None
        raise failure

    async def _connect(self) -> _Connection:
        sock = await self._socket()
        smtp = aiosmtplib.SMTP(
            # With a socket of ours, the name is still what TLS verifies (and SNI carries).
            hostname=self.host,
            port=self.port if sock is None else None,
            sock=sock,
            local_hostname=self.helo,
            timeout=self.timeout,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            tls_context=self.tls_context,
        )
        await smtp.connect()
        if smtp.last_ehlo_response is None:  # the transactions below do not greet by themselves
            await smtp.ehlo()
        if self.username is not None and self.password is not None:
            await smtp.login(self.username, self.password)
        wire = Wire.take_over(smtp)
        self._open += 1
        return _Connection(wire)

    async def _close(self, conn: _Connection, *, polite: bool = True) -> None:
        """Close a connection: with QUIT when it is healthy; at once after an error (a
        stalled server would hold QUIT, and the delivery, until its own timeout)."""
        self._open -= 1
        if polite:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout):
                    await conn.wire.quit()
        conn.wire.close()

    async def send(
        self, mail_from: str, rcpt: str, data: bytes, *, deadline: float | None = None
    ) -> SendResult:
        """Hand one message to the relay; returns its final reply (2xx, 4xx or 5xx).

        A connection that fails before the message data went out is replaced and the message
        tried once more; other network errors before that surface as a 4xx-like result (451)
        so the delivery is retried later. A failure once the data went out (or `deadline`
        seconds passing then) is `uncertain`: the relay may have accepted the message."""
        first = deadline is not None and deadline <= self.timeout
        phase = _Phase(reply_timeout=None if first else self.timeout)
        try:
            async with asyncio.timeout(deadline):
                return await self._send(mail_from, rcpt, data, phase)
        except TimeoutError:
            if phase.conn is not None:
                await self._close(phase.conn, polite=False)
            if phase.data_sent:
                return SendResult(451, "4.4.2 timed out after DATA", uncertain=True)
            return SendResult(451, f"4.4.2 timed out before DATA ({deadline:.0f} s)")

    async def _send(self, mail_from: str, rcpt: str, data: bytes, phase: _Phase) -> SendResult:
        async with self._slots:
            for attempt in (1, 2):
                try:
                    conn = self._idle.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        conn = await self._connect()
                    except (aiosmtplib.SMTPException, OSError, DestinationNotAllowedError) as error:
                        return SendResult(
                            451, f"4.4.1 cannot connect to relay: {error}", unreachable=True
                        )
                phase.conn = conn
                try:
                    result = await self._transaction(conn.wire, mail_from, rcpt, data, phase)
                except OSError as error:  # WireError: lost, closed, garbled or timed out
                    await self._close(conn, polite=False)
                    phase.conn = None
                    if phase.data_sent:
                        return SendResult(451, f"4.4.2 connection lost after DATA: {error}", True)
                    if attempt == 2:
                        return SendResult(
                            451, f"4.4.2 connection to relay lost: {error}", unreachable=True
                        )
                    continue
                phase.conn = None
                if result.code != 250:
                    await self._reset_or_close(conn)
                    return result
                conn.sent += 1
                if conn.sent >= self.max_messages:
                    await self._close(conn)
                else:
                    self._release(conn)
                return result
            raise AssertionError("unreachable")

    async def _transaction(
        self, wire: Wire, mail_from: str, rcpt: str, data: bytes, phase: _Phase
    ) -> SendResult:
        """MAIL, RCPT, DATA for one recipient; the first non-success reply is the result.

        With PIPELINING the three commands go in one write and their replies are read
        together (RFC 2920), then the content; else one command at a time. Addresses are
        validated before (import, headers) and built by us (return-path), so they are only
        bracketed; a non-ASCII one asks for SMTPUTF8 (RFC 6531)."""
        if not wire.usable:
            raise WireError("the relay closed the session while it was idle")
        utf8 = not (mail_from.isascii() and rcpt.isascii())
        if utf8 and not wire.smtputf8:
            return SendResult(553, "5.6.7 the relay does not offer SMTPUTF8 for this address")
        for address in (mail_from, rcpt):
            if "\r" in address or "\n" in address or "\0" in address:
                raise ValueError(f"an address with a line break or NUL: {address!r}")
        commands = (
            b"MAIL FROM:<" + mail_from.encode() + (b"> SMTPUTF8\r\n" if utf8 else b">\r\n"),
            b"RCPT TO:<" + rcpt.encode() + b">\r\n",
            b"DATA\r\n",
        )
        try:
            async with asyncio.timeout(phase.reply_timeout):
                if wire.pipelining:
                    wire.write(b"".join(commands))
                    mail, to, start = await wire.replies(3)
                else:
                    wire.write(commands[0])
                    (mail,) = await wire.replies(1)
                    if mail.code != 250:
                        return SendResult(mail.code, mail.text)
                    wire.write(commands[1])
                    (to,) = await wire.replies(1)
                    if to.code not in (250, 251):
                        return SendResult(to.code, to.text)
                    wire.write(commands[2])
                    (start,) = await wire.replies(1)
                refused = mail if mail.code != 250 else to if to.code not in (250, 251) else None
                if refused is not None:
                    if start.code == 354:
                        # A server that took DATA without a recipient gets an empty message,
                        # which it then refuses (RFC 2920 3.1).
                        wire.write(b".\r\n")
                        await wire.replies(1)
                    return SendResult(refused.code, refused.text)
                if start.code != 354:
                    return SendResult(start.code, start.text)
                phase.data_sent = True  # from here on, a failure may follow an acceptance
                wire.write(_content(data))
                (done,) = await wire.replies(1)
        except TimeoutError as error:
            raise WireError(f"no reply from the relay within {self.timeout:.0f} s") from error
        return SendResult(done.code, done.text)

    def _release(self, conn: _Connection) -> None:
        self._idle.put_nowait(conn)

    async def _reset_or_close(self, conn: _Connection) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                conn.wire.write(b"RSET\r\n")
                (reply,) = await conn.wire.replies(1)
        except (OSError, TimeoutError):
            await self._close(conn, polite=False)
            return
        if reply.code == 250:
            self._release(conn)
        else:
            await self._close(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            await self._close(self._idle.get_nowait())


def _content(data: bytes) -> bytes:
    """The message as DATA carries it: CRLF line ends, lines starting with a dot doubled
    (RFC 5321 4.5.2), the final CRLF and the terminating dot."""
    data = to_wire(data)  # the signer's output is already: then a scan, no copy
    if data.startswith(b"."):
        data = b"." + data
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
