"""DKIM signatures made in worker processes beside the sender's event loop, or on it.

    signing = Signing(processes=1)
    signed = await signing.sign(signer, message)   # the message in wire form, signed
    await signing.close()

Why processes: the two signatures (RSA-2048 and Ed25519) with their canonicalization are about
half of the sender's CPU per message, and everything else the sender does is on one event loop,
so a sender given two CPUs used one. Threads do not help: OpenSSL releases the GIL while it
signs, but each signature must take the GIL back from a loop that is always busy, which it gets
only at the interpreter's switch interval (5 ms): measured, a signing thread made the sender
slower (docs/sending.md). A worker process has its own interpreter: the loop sends it the
message's bytes over a pipe and gets the DKIM-Signature lines back, a few tens of microseconds
of its own time per message instead of half a millisecond.

The protocol is private to this module, over the worker's stdin and stdout (its stderr is the
sender's): frames of a fixed header and a payload. A signer is sent once per worker (its domain,
selectors, PEM keys and signed-header list as JSON) and named by a number afterwards; keys go
only through that pipe and are never logged. The worker answers in order of arrival, and
batches its replies when several requests arrived together.

A worker that exits (killed by the OOM killer, say) fails its pending requests over to the loop,
which signs them itself; one that owes replies and has been silent for `SILENT_SECONDS` (stopped,
stuck) is killed first. The next message starts another worker, up to `RESTARTS` times, and
after that every message is signed on the loop. The worker exits when its stdin closes, so a
sender killed with SIGKILL leaves none behind.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import struct
import sys
import time
from collections.abc import Callable
from typing import cast

from penguinmails.common.dkim.signer import DkimSigner, SignerSpec, to_wire

__all__ = ["RESTARTS", "Signing"]

log = logging.getLogger(__name__)

RESTARTS = 3
"""How many times a worker that exited is replaced before the sender signs on its loop for the
rest of its life (a worker that keeps dying would otherwise be respawned forever)."""

_REGISTER, _SIGN = 1, 2
_REQUEST = struct.Struct("!BIIqI")
"""Sender -> worker: kind, request id, signer id, timestamp (t=), payload length."""
_REPLY = struct.Struct("!IBI")
"""Worker -> sender: request id, status (0: the signature lines; 1: an error's text), length."""
_OK, _FAILED = 0, 1

SILENT_SECONDS = 10.0
"""A worker with messages waiting that has answered nothing for this long is killed (stopped or
stuck: a signature takes a millisecond), so that they are signed on the loop instead."""


class WorkerGoneError(Exception):
    """The worker exited before it answered."""


class WorkerFailedError(Exception):
    """The worker could not sign a message (the text of its error)."""


class _Worker(asyncio.SubprocessProtocol):
    """One worker process, seen from the event loop: its pending requests by id."""

    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.registered: set[int] = set()
        self.alive = True
        self._exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._buffer = bytearray()
        self._heard = time.monotonic()
        """When the worker last answered, or was asked while it owed nothing."""
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Cast, not checked: uvloop's transports do not derive from asyncio's classes.
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self._stdin = cast(asyncio.WriteTransport, self._transport.get_pipe_transport(0))

    def send(self, frame: bytes, payload: bytes = b"") -> None:
        assert self._stdin is not None
        self._stdin.writelines((frame, payload))

    def request(self, request: int, frame: bytes, payload: bytes) -> asyncio.Future[bytes]:
        """Send a signing request; its reply (the signature lines) is the future's result."""
        loop = asyncio.get_running_loop()
        if not self.pending:
            self._heard = time.monotonic()
        reply: asyncio.Future[bytes] = loop.create_future()
        self.pending[request] = reply
        self.send(frame, payload)
        if self._watch is None:
            self._watch = loop.call_later(SILENT_SECONDS, self._check)
        return reply

    def _check(self) -> None:
        """The watchdog: kill a worker that owes replies and has been silent too long."""
        self._watch = None
        if not self.alive or not self.pending or self._transport is None:
            return
        silent = time.monotonic() - self._heard
        if silent < SILENT_SECONDS:
            self._watch = asyncio.get_running_loop().call_later(
                SILENT_SECONDS - silent, self._check
            )
            return
        log.warning(
            "a DKIM signing process answered nothing for %.0f s with %d messages waiting: "
            "killed, they are signed on the event loop",
            silent,
            len(self.pending),
        )
        self._transport.kill()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._heard = time.monotonic()
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= _REPLY.size:
            request, status, length = _REPLY.unpack_from(buffer, offset)
            end = offset + _REPLY.size + length
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + _REPLY.size : end])
            offset = end
            future = self.pending.pop(request, None)
            if future is None or future.done():  # its caller was cancelled
                continue
            if status == _OK:
                future.set_result(payload)
            else:
                future.set_exception(WorkerFailedError(payload.decode(errors="replace")))
        del buffer[:offset]

    def process_exited(self) -> None:
        self.alive = False
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if not self._exited.done():
            self._exited.set_result(None)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(WorkerGoneError())
        self.pending.clear()

    @property
    def pid(self) -> int | None:
        return None if self._transport is None else self._transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return None if self._transport is None else self._transport.get_returncode()

    def close(self) -> None:
        if self._stdin is not None:
            self._stdin.close()  # the worker exits at the end of its input

    async def stopped(self) -> None:
        """Wait for the worker to exit after `close` (killed after 10 s)."""
        assert self._transport is not None
        try:
            async with asyncio.timeout(10):
                await asyncio.shield(self._exited)
        except TimeoutError:
            self._transport.kill()
        self._transport.close()


class Signing:
    """Signs messages in `processes` worker processes (started with the first message), or on
    the event loop when `processes` is 0 or the workers kept exiting."""

    def __init__(self, processes: int, *, clock: Callable[[], float] = time.time) -> None:
        self.processes = max(0, processes)
        self._clock = clock
        self.restarts = 0
        self._workers: list[_Worker] = []
        self._starting: asyncio.Lock | None = None
        self._ids: dict[SignerSpec, int] = {}
        self._requests = itertools.count(1)

    @property
    def pids(self) -> list[int]:
        """The worker processes running now."""
        return [pid for w in self._workers if w.alive and (pid := w.pid) is not None]

    @property
    def inline(self) -> bool:
        """Whether messages are signed on the event loop."""
        return self.processes == 0 or self.restarts > RESTARTS

    async def sign(self, signer: DkimSigner, message: bytes) -> bytes:
        """`message` in wire form (CRLF) with `signer`'s DKIM-Signature headers on top."""
        wire = to_wire(message)
        timestamp = int(self._clock())
        if self.inline:
            return signer.sign(wire, timestamp=timestamp)
        worker = await self._worker()
        if worker is None:
            return signer.sign(wire, timestamp=timestamp)
        signer_id = self._ids.setdefault(signer.spec, len(self._ids))
        if signer_id not in worker.registered:
            payload = _encode(signer.spec)
            worker.send(_REQUEST.pack(_REGISTER, 0, signer_id, 0, len(payload)), payload)
            worker.registered.add(signer_id)
        request = next(self._requests) & 0xFFFFFFFF
        frame = _REQUEST.pack(_SIGN, request, signer_id, timestamp, len(wire))
        try:
            headers = await worker.request(request, frame, wire)
        except (WorkerGoneError, WorkerFailedError):
            # Signed here instead: a worker's error (never seen: the bytes are in wire
            # form) is raised again where the caller sees it.
            headers = signer.signature_headers(wire, timestamp=timestamp)
        return headers + wire

    async def _worker(self) -> _Worker | None:
        """The worker with the fewest requests pending; started (or replaced) as needed."""
        for worker in [w for w in self._workers if not w.alive]:
            self._workers.remove(worker)
            self.restarts += 1
            log.warning(
                "a DKIM signing process exited with %s; %s",
                worker.returncode,
                f"starting another ({self.restarts} of {RESTARTS} restarts)"
                if self.restarts <= RESTARTS
                else f"signing on the event loop from now on (after {RESTARTS} restarts)",
            )
        if self.inline:
            return None
        if len(self._workers) < self.processes:
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:
                while len(self._workers) < self.processes and not self.inline:
                    try:
                        self._workers.append(await _start())
                    except OSError as error:
                        self.restarts += 1
                        log.warning("a DKIM signing process could not start: %s", error)
        return min(self._workers, key=lambda w: len(w.pending), default=None)

    async def close(self) -> None:
        """Stop the workers (each finishes what it was sent); the next message starts new ones."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()
        for worker in workers:
            await worker.stopped()


async def _start() -> _Worker:
    # -P: never import from the working directory; the worker imports only the signer.
    _, worker = await asyncio.get_running_loop().subprocess_exec(
        _Worker,
        sys.executable,
        "-P",
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
    )
    return worker


def _encode(spec: SignerSpec) -> bytes:
    return json.dumps(
        {
            "domain": spec.domain,
            "keys": [[selector, base64.b64encode(pem).decode()] for selector, pem in spec.keys],
            "headers": list(spec.signed_headers),
        }
    ).encode()


def _decode(payload: bytes) -> SignerSpec:
    data = json.loads(payload)
    return SignerSpec(
        data["domain"],
        tuple((selector, base64.b64decode(pem)) for selector, pem in data["keys"]),
        tuple(data["headers"]),
    )


# ----------------------------------------------------------------------------- the worker


def _serve(read_fd: int = 0, write_fd: int = 1) -> None:
    """Answer every request until the input ends: one read takes what has arrived, and the
    replies to it leave in one write."""
    signers: dict[int, DkimSigner] = {}
    buffer = bytearray()
    while chunk := os.read(read_fd, 1 << 20):
        buffer += chunk
        replies: list[bytes] = []
        offset = 0
        while len(buffer) - offset >= _REQUEST.size:
            kind, request, signer_id, timestamp, length = _REQUEST.unpack_from(buffer, offset)
            end = offset + _REQUEST.size + length
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + _REQUEST.size : end])
            offset = end
            if kind == _REGISTER:
                signers[signer_id] = DkimSigner.from_spec(_decode(payload))
                continue
            try:
                lines = signers[signer_id].signature_headers(payload, timestamp=timestamp)
                replies += (_REPLY.pack(request, _OK, len(lines)), lines)
            except Exception as error:  # answered: the sender signs it itself
                text = f"{type(error).__name__}: {error}".encode()
                replies += (_REPLY.pack(request, _FAILED, len(text)), text)
        del buffer[:offset]
        out = memoryview(b"".join(replies))
        while out:
            out = out[os.write(write_fd, out) :]


if __name__ == "__main__":
    _serve()
