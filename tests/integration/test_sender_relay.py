"""The sender's SMTP pool against a real Postfix with STARTTLS, and against a refusing server."""

from __future__ import annotations

import asyncio
import socket
import ssl
from ipaddress import ip_network
from pathlib import Path

import pytest

from penguinmails.common.egress import EgressPolicy
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.smtp import RelayPool

pytestmark = pytest.mark.integration

MESSAGE = b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\nhello\r\n"


async def arrived(sink: SinkServer, count: int) -> None:
    for _ in range(300):
        if len(sink.messages) >= count:
            return
        await asyncio.sleep(0.1)


async def test_starttls_is_required_and_verified(services_dir: Path) -> None:
    with (
        SinkServer() as sink,
        PostfixServer(
            services_dir, relayhost=sink.address, tls=True, hostname="localhost", name="pf-tls"
        ) as relay,
    ):
        assert relay.tls_cert is not None
        trusted = RelayPool(
            "localhost",
            relay.port,
            tls="starttls",
            tls_context=ssl.create_default_context(cafile=str(relay.tls_cert)),
            size=2,
        )
        results = [await trusted.send("a@sender.test", "b@dest.test", MESSAGE) for _ in range(3)]
        await trusted.close()
        assert [r.code for r in results] == [250, 250, 250]
        await arrived(sink, 3)
        assert len(sink.messages) == 3
        # A certificate we do not trust: nothing is sent in clear, the delivery is deferred.
        untrusted = RelayPool("localhost", relay.port, tls="starttls", size=1)
        result = await untrusted.send("a@sender.test", "b@dest.test", MESSAGE)
        await untrusted.close()
        assert result.code == 451 and "cannot connect" in result.text
        assert len(sink.messages) == 3


async def test_refusals_keep_the_connection_usable() -> None:
    with SinkServer() as sink:
        sink.reply_for["gone@dest.test"] = (550, "5.1.1 no such user")
        pool = RelayPool("127.0.0.1", sink.port, size=1, max_messages=3)
        codes = []
        for rcpt in ["a@dest.test", "gone@dest.test", "b@dest.test", "c@dest.test", "d@dest.test"]:
            codes.append((await pool.send("a@sender.test", rcpt, MESSAGE)).code)
        await pool.close()
        assert codes == [250, 550, 250, 250, 250]
        assert [m.rcpt_tos[0] for m in sink.messages] == [
            "a@dest.test",
            "b@dest.test",
            "c@dest.test",
            "d@dest.test",
        ]


class ScriptedRelay:
    """A relay on loopback that records what each read from the client held, and answers
    each command with `reply(line)`, its replies cut into `chunk`-byte writes (a reply split
    across segments, several replies in one: the client must reassemble both)."""

    def __init__(self, *, pipelining: bool, chunk: int = 1 << 16) -> None:
        self.pipelining, self.chunk = pipelining, chunk
        self.reads: list[bytes] = []
        self.messages: list[bytes] = []
        self.refuse: dict[bytes, bytes] = {}
        self.accept_data_anyway = False
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedRelay:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        for i in range(0, len(data), self.chunk):
            writer.write(data[i : i + self.chunk])
            await writer.drain()
            await asyncio.sleep(0)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._send(writer, b"220 scripted ESMTP\r\n")
        pending, content, in_data, recipients = b"", b"", False, 0
        while chunk := await reader.read(65536):
            self.reads.append(chunk)
            pending += chunk
            replies = b""
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                if in_data:
                    if line == b".\r":
                        in_data = False
                        self.messages.append(content)
                        content = b""
                        replies += (
                            b"250 2.0.0 queued\r\n" if recipients else b"554 5.5.1 no rcpt\r\n"
                        )
                    else:
                        content += line + b"\n"
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    extensions = b"250-PIPELINING\r\n" if self.pipelining else b""
                    replies += b"250-scripted\r\n" + extensions + b"250 8BITMIME\r\n"
                elif verb == b"MAIL":
                    recipients = 0
                    replies += b"250-sender\r\n250 2.1.0 ok\r\n"  # multi-line on purpose
                elif verb == b"RCPT":
                    refusal = next((r for a, r in self.refuse.items() if a in line), None)
                    recipients += refusal is None
                    replies += refusal or b"250 2.1.5 ok\r\n"
                elif verb == b"DATA":
                    if recipients or self.accept_data_anyway:
                        in_data = True
                        replies += b"354 go ahead\r\n"
                    else:
                        replies += b"554 5.5.1 no valid recipients\r\n"
                elif verb == b"QUIT":
                    await self._send(writer, replies + b"221 bye\r\n")
                    writer.close()
                    return
                else:
                    replies += b"250 ok\r\n"
            if replies:
                await self._send(writer, replies)
        writer.close()


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])
async def test_pipelining_sends_mail_rcpt_data_in_one_write_and_pairs_every_reply(
    chunk: int,
) -> None:
    """RFC 2920: with PIPELINING advertised, MAIL, RCPT and DATA reach the relay in one read,
    then the content; replies cut anywhere (one byte per segment, several per segment, multi-
    line) are each paired with their command: a refusal is the refused RCPT's, the next
    message on the same connection still goes."""
    async with ScriptedRelay(pipelining=True, chunk=chunk) as relay:
        relay.refuse[b"<gone@dest.test>"] = b"550 5.1.1 no such user\r\n"
        pool = RelayPool("127.0.0.1", relay.port, size=1, max_messages=10)
        results = [
            await pool.send("a@sender.test", rcpt, MESSAGE + b".hidden dot\r\n")
            for rcpt in ("a@dest.test", "gone@dest.test", "b@dest.test")
        ]
        await pool.close()
    assert [(r.code, r.text) for r in results] == [
        (250, "2.0.0 queued"),
        (550, "5.1.1 no such user"),
        (250, "2.0.0 queued"),
    ]
    pipelined = [r for r in relay.reads if r.startswith(b"MAIL FROM:")]
    assert [r.count(b"\r\n") for r in pipelined] == [3, 3, 3], relay.reads
    assert relay.messages == [MESSAGE + b"..hidden dot\r\n"] * 2  # dot-stuffed on the wire


async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    async with ScriptedRelay(pipelining=False, chunk=3) as relay:
        relay.refuse[b"<gone@dest.test>"] = b"550 5.1.1 no such user\r\n"
        pool = RelayPool("127.0.0.1", relay.port, size=1)
        codes = [
            (await pool.send("a@sender.test", rcpt, MESSAGE)).code
            for rcpt in ("gone@dest.test", "b@dest.test")
        ]
        await pool.close()
    assert codes == [550, 250]
    commands = [r for r in relay.reads if r[:4] in (b"MAIL", b"RCPT", b"DATA")]
    assert all(r.count(b"\r\n") == 1 for r in commands), commands
    assert b"DATA\r\n" in commands and len(relay.messages) == 1


async def test_a_relay_that_takes_data_without_a_recipient_gets_an_empty_message() -> None:
    """RFC 2920 3.1: DATA pipelined after a refused RCPT may still get 354 from a lax server;
    the client then ends it at once (an empty message, refused) and reports the refusal."""
    async with ScriptedRelay(pipelining=True) as relay:
        relay.refuse[b"<gone@dest.test>"] = b"550 5.1.1 no such user\r\n"
        relay.accept_data_anyway = True
        pool = RelayPool("127.0.0.1", relay.port, size=1)
        gone = await pool.send("a@sender.test", "gone@dest.test", MESSAGE)
        after = await pool.send("a@sender.test", "b@dest.test", MESSAGE)
        await pool.close()
    assert (gone.code, gone.uncertain) == (550, False)
    assert after.code == 250
    assert relay.messages == [b"", MESSAGE]


@pytest.mark.parametrize("egress", [None, EgressPolicy(allowed=(ip_network("127.0.0.0/8"),))])
async def test_connections_send_small_writes_without_waiting(egress: EgressPolicy | None) -> None:
    """Every relay connection has TCP_NODELAY, also the ones the egress policy connects itself
    (asyncio sets it only on sockets it creates with the TCP protocol number): a command
    written while the relay has not yet acknowledged the content before it goes out at once
    instead of waiting out Nagle's algorithm behind the relay's delayed ACK."""
    async with ScriptedRelay(pipelining=True, chunk=1 << 16) as relay:
        pool = RelayPool("127.0.0.1", relay.port, size=1, egress=egress)
        assert (await pool.send("a@sender.test", "b@dest.test", MESSAGE)).code == 250
        conn = pool._idle.get_nowait()
        sock = conn.wire.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        pool._release(conn)
        await pool.close()
