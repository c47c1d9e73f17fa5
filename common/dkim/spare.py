"""Spare private keys, generated ahead, so that a new domain or a rotation does not wait for RSA.

RSA-2048 generation takes 0.15 s of CPU (seconds on a loaded core), and `rotate-dkim` is timed
from the annotation to the new key in the Secret. The operator keeps spare keys of each slow
algorithm, made by a `KeyMaker` (worker processes in production, `common.dkim.keygen`): as many
as the maker makes at once, so that a burst of new SendingDomains finds that many ready and
every CPU busy making the next ones, and each use starts the next spare. A spare is handed out
once (it becomes one domain's key and is then gone from here), and is never logged: it is a
private key like any other.

Ed25519 generation takes microseconds: it has no spare and is made by the caller.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from concurrent.futures import Future

from penguinmails.common.dkim.keygen import KeyMaker, ProcessKeys
from penguinmails.common.dkim.keys import generate_private_key

SLOW_ALGORITHMS = ("rsa2048",)


class SpareKeys:
    """Pre-generated private keys per slow algorithm, `depth` of each (default: as many as
    the maker makes at once); `take` hands each out once, to one caller."""

    def __init__(self, maker: KeyMaker | None = None, depth: int | None = None) -> None:
        self._maker: KeyMaker = maker if maker is not None else ProcessKeys()
        self._depth = max(1, depth if depth is not None else self._maker.workers)
        self._lock = threading.Lock()
        # Oldest first: it is the one that is ready soonest.
        self._spares: dict[str, deque[Future[bytes]]] = {a: deque() for a in SLOW_ALGORITHMS}
        self._closed = False

    @property
    def depth(self) -> int:
        return self._depth

    def prepare(self) -> None:
        """Start making the spares that are neither there nor in the making."""
        with self._lock:
            if self._closed:
                return
            for algorithm in SLOW_ALGORITHMS:
                self._top_up(algorithm)

    def _top_up(self, algorithm: str) -> None:
        spares = self._spares[algorithm]
        while len(spares) < self._depth:
            spares.append(self._maker.submit(algorithm))

    async def take(self, algorithm: str) -> bytes:
        """A new private key (PKCS#8 PEM) of `algorithm`, never handed out before: the oldest
        spare (waiting for it when it is in the making, which is sooner than starting anew),
        and the next spare is started at once. Waiting holds no thread. A spare that failed
        is made again, once."""
        if algorithm not in self._spares:
            return generate_private_key(algorithm)  # Ed25519: microseconds
        try:
            return await self._claim(algorithm)
        except asyncio.CancelledError:
            raise
        except Exception:
            return await self._claim(algorithm)

    async def _claim(self, algorithm: str) -> bytes:
        with self._lock:
            if self._closed:
                raise RuntimeError("the spare DKIM keys are closed (the operator is stopping)")
            self._top_up(algorithm)
            spare = self._spares[algorithm].popleft()
            self._top_up(algorithm)
        try:
            # Shielded: a pass cancelled while it waits puts the spare back for the next one
            # instead of cancelling it (or losing it).
            return await asyncio.shield(asyncio.wrap_future(spare))
        except asyncio.CancelledError:
            with self._lock:
                if not self._closed and not spare.cancelled():
                    self._spares[algorithm].appendleft(spare)
            raise

    def ready(self, algorithm: str) -> int:
        """How many spares of `algorithm` are made and waiting (for tests and the bench)."""
        with self._lock:
            spares = list(self._spares.get(algorithm, ()))
        return sum(1 for s in spares if s.done() and not s.cancelled() and s.exception() is None)

    def close(self) -> None:
        """Stop making spares and drop those made (a key in the making is finished, then
        dropped)."""
        with self._lock:
            self._closed = True
            for spares in self._spares.values():
                for spare in spares:
                    spare.cancel()
                spares.clear()
        self._maker.close()
