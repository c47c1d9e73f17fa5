"""A pool of long-lived SMTP connections to one relay (aiosmtplib has none of its own).

Connections are opened lazily up to `size`, reused for up to `max_messages` messages (relays
and receivers cap messages per connection), and replaced when the server drops them. STARTTLS
is used when the relay's mode asks for it (and then required), AUTH when credentials are given.

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

from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy

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
    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        self.smtp = smtp
        self.sent = 0


@dataclass
class _Phase:
    """How far one send got: which connection it holds, whether the data went out."""

    conn: _Connection | None = None
    data_sent: bool = False


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
        self._open += 1
        return _Connection(smtp)

    async def _close(self, conn: _Connection, *, polite: bool = True) -> None:
        """Close a connection: with QUIT when it is healthy; at once after an error (a
        stalled server would hold QUIT, and the delivery, until its own timeout)."""
        self._open -= 1
        if polite:
            with contextlib.suppress(Exception):
                if conn.smtp.is_connected:
                    await conn.smtp.quit()
        conn.smtp.close()

    async def send(
        self, mail_from: str, rcpt: str, data: bytes, *, deadline: float | None = None
    ) -> SendResult:
        """Hand one message to the relay; returns its final reply (2xx, 4xx or 5xx).

        A connection that fails before the message data went out is replaced and the message
        tried once more; other network errors before that surface as a 4xx-like result (451)
        so the delivery is retried later. A failure once the data went out (or `deadline`
        seconds passing then) is `uncertain`: the relay may have accepted the message."""
        phase = _Phase()
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
                    result = await self._transaction(conn.smtp, mail_from, rcpt, data, phase)
                except (
                    aiosmtplib.SMTPServerDisconnected,
                    aiosmtplib.SMTPTimeoutError,
                    OSError,
                ) as error:
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

    @staticmethod
    async def _transaction(
        smtp: aiosmtplib.SMTP, mail_from: str, rcpt: str, data: bytes, phase: _Phase
    ) -> SendResult:
        """MAIL, RCPT, DATA for one recipient; the first non-success reply is the result.

        The commands go out directly: aiosmtplib's `sendmail` re-parses both addresses with
        the email package on every message, which cost more than signing the message. Our
        addresses are already validated (import) and built by us (return-path), so they are
        only bracketed; non-ASCII ones take `sendmail`, which handles SMTPUTF8."""
        if not (mail_from.isascii() and rcpt.isascii()):
            phase.data_sent = True  # sendmail does it all: assume the worst on failure
            try:
                _, response = await smtp.sendmail(mail_from, [rcpt], data)
            except aiosmtplib.SMTPRecipientsRefused as refused:
                return SendResult(refused.recipients[0].code, refused.recipients[0].message)
            except aiosmtplib.SMTPResponseException as error:
                return SendResult(error.code, error.message)
            return SendResult(250, response)
        reply = await smtp.execute_command(b"MAIL", b"FROM:<" + mail_from.encode() + b">")
        if reply.code != 250:
            return SendResult(reply.code, reply.message)
        reply = await smtp.execute_command(b"RCPT", b"TO:<" + rcpt.encode() + b">")
        if reply.code not in (250, 251):
            return SendResult(reply.code, reply.message)
        phase.data_sent = True  # from here on, a failure may follow an acceptance
        try:
            reply = await smtp.data(data)
        except aiosmtplib.SMTPDataError as error:
            return SendResult(error.code, error.message)
        return SendResult(reply.code, reply.message)

    def _release(self, conn: _Connection) -> None:
        self._idle.put_nowait(conn)

    async def _reset_or_close(self, conn: _Connection) -> None:
        try:
            await conn.smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self._close(conn)
        else:
            self._release(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            await self._close(self._idle.get_nowait())
