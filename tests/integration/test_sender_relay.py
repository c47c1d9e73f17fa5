"""The sender's SMTP pool against a real Postfix with STARTTLS, and against a refusing server."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

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
