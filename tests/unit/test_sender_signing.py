"""DKIM signatures made in worker processes (`sender.signing`): the same bytes as on the event
loop, verified by dkimpy, many at once; a killed worker's messages still signed, the worker
replaced up to `RESTARTS` times and then none; and no worker outliving its sender."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import dkim
import pytest

from penguinmails.common.dkim.keys import DkimKey, KeyState, generate_private_key
from penguinmails.common.dkim.signer import DkimSigner
from penguinmails.sender.signing import RESTARTS, SILENT_SECONDS, Signing

from .test_dkim_signer import DOMAIN, MESSAGE, dns

NOW = 1_764_000_000.0


@pytest.fixture(scope="module")
def keys() -> list[DkimKey]:
    now = datetime.now(UTC)
    return [
        DkimKey("rsa1", "rsa2048", KeyState.ACTIVE, now, generate_private_key("rsa2048")),
        DkimKey("ed1", "ed25519", KeyState.ACTIVE, now, generate_private_key("ed25519")),
    ]


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


async def test_a_worker_signs_the_bytes_the_loop_would(keys: list[DkimKey]) -> None:
    """Two signers (each sent to the worker once), bare line ends turned into CRLF first:
    byte for byte what `DkimSigner.sign` makes, and dkimpy verifies both signatures."""
    signing = Signing(1, clock=lambda: NOW)
    first = DkimSigner.from_dkim_keys(DOMAIN, keys)
    second = DkimSigner.from_dkim_keys("other.test", keys[:1])
    try:
        for signer in (first, second, first):
            signed = await signing.sign(signer, MESSAGE.replace(b"\r\n", b"\n"))
            assert signed == signer.sign(MESSAGE, timestamp=int(NOW))
        assert len(signing.pids) == 1 and signing.pids[0] != os.getpid()
    finally:
        await signing.close()
    signed = await Signing(1).sign(first, MESSAGE)
    verifier = dkim.DKIM(signed)
    assert verifier.verify(idx=0, dnsfunc=dns(keys))
    assert verifier.verify(idx=1, dnsfunc=dns(keys))


async def test_many_messages_at_once_each_get_their_own_signature(
    keys: list[DkimKey],
) -> None:
    """What the sender does: dozens in flight, the replies batched by the worker."""
    signing = Signing(1, clock=lambda: NOW)
    signer = DkimSigner.from_dkim_keys(DOMAIN, keys)
    messages = [MESSAGE.replace(b"Hello  world", f"Hello {i}".encode()) for i in range(300)]
    try:
        signed = await asyncio.gather(*(signing.sign(signer, m) for m in messages))
    finally:
        await signing.close()
    assert signed == [signer.sign(m, timestamp=int(NOW)) for m in messages]


async def test_a_killed_worker_is_replaced_and_then_the_loop_signs(
    keys: list[DkimKey], caplog: pytest.LogCaptureFixture
) -> None:
    signing = Signing(1, clock=lambda: NOW)
    signer = DkimSigner.from_dkim_keys(DOMAIN, keys)
    expected = signer.sign(MESSAGE, timestamp=int(NOW))
    killed: list[int] = []
    try:
        for restart in range(RESTARTS + 1):
            assert await signing.sign(signer, MESSAGE) == expected
            [pid] = signing.pids
            assert pid not in killed
            # Killed with messages pending: they are signed all the same (on the loop).
            pending = [asyncio.create_task(signing.sign(signer, MESSAGE)) for _ in range(20)]
            await asyncio.sleep(0)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            assert await asyncio.gather(*pending) == [expected] * 20
            assert _gone(pid)
            assert signing.restarts == restart
        assert await signing.sign(signer, MESSAGE) == expected
        assert signing.inline and signing.pids == []
        assert signing.restarts == RESTARTS + 1
        warnings = [r.getMessage() for r in caplog.records if "signing process" in r.message]
        assert len(warnings) == RESTARTS + 1
        assert "on the event loop from now on" in warnings[-1]
    finally:
        await signing.close()


async def test_close_stops_the_workers_and_a_next_message_starts_one(
    keys: list[DkimKey],
) -> None:
    signing = Signing(1)
    signer = DkimSigner.from_dkim_keys(DOMAIN, keys)
    await signing.sign(signer, MESSAGE)
    [pid] = signing.pids
    await signing.close()
    assert signing.pids == [] and _gone(pid, within=0.5)
    await signing.sign(signer, MESSAGE)
    assert signing.pids not in ([], [pid])
    assert signing.restarts == 0  # a stop asked for is not a worker that died
    await signing.close()


def test_a_sender_killed_leaves_no_worker() -> None:
    """SIGKILL of the process that started the worker (the sender pod's main process): the
    worker sees its input end and exits."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from penguinmails.common.dkim.keys import generate_private_key
        from penguinmails.common.dkim.signer import DkimSigner
        from penguinmails.sender.signing import Signing

        async def main():
            signing = Signing(1)
            signer = DkimSigner("x.test", [("ed", generate_private_key("ed25519"))])
            await signing.sign(signer, {MESSAGE!r})
            print(signing.pids[0], flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-P", "-c", script],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)
        assert _gone(worker), "the signing worker outlived its sender"
    finally:
        parent.kill()


async def test_a_stopped_worker_is_killed_and_its_messages_signed_on_the_loop(
    keys: list[DkimKey], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that owes replies and says nothing for `SILENT_SECONDS` (here: SIGSTOP, at
    the production default) is killed; what it owed is signed on the loop, and the next
    message has a new worker."""
    signing = Signing(1, clock=lambda: NOW)
    signer = DkimSigner.from_dkim_keys(DOMAIN, keys)
    expected = signer.sign(MESSAGE, timestamp=int(NOW))
    try:
        await signing.sign(signer, MESSAGE)
        [stopped] = signing.pids
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        async with asyncio.timeout(SILENT_SECONDS + 30):  # without the watchdog: forever
            signed = await asyncio.gather(*(signing.sign(signer, MESSAGE) for _ in range(5)))
        waited = time.monotonic() - started
        assert signed == [expected] * 5
        assert SILENT_SECONDS <= waited < SILENT_SECONDS + 5
        assert _gone(stopped)
        assert any("answered nothing" in r.getMessage() for r in caplog.records)
        assert await signing.sign(signer, MESSAGE) == expected
        assert signing.restarts == 1 and signing.pids not in ([], [stopped])
    finally:
        await signing.close()
