"""Where private keys are made: worker processes (`ProcessKeys`), or a thread (`ThreadKeys`).

RSA-2048 generation costs 0.05 to 0.15 s of CPU per key (by machine) and holds the GIL the
whole time: in a thread of the operator it takes the event loop's core and no other (two threads
generate no faster than one). `ProcessKeys` makes keys in a small `ProcessPoolExecutor`, one
process per CPU the operator may use, so a burst of new SendingDomains gets every core while the
event loop keeps its own. The processes are `spawn`ed (never `fork`ed from a process that has
threads and an event loop), started on the first key, and stopped by `close`. A key leaves its
process only through the pool's pipe, as the future's result, and is never logged.

When the pool breaks (a worker killed, e.g. by the OOM killer), it is started again and the
keys it owed are made there, with a warning; after `RESTARTS` breaks, keys are made in a thread
of the operator instead (a worker that keeps dying would otherwise be respawned forever). Either
way a SendingDomain's pass never fails for it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from penguinmails.common.cpus import usable_cpus
from penguinmails.common.dkim.keys import generate_private_key

log = logging.getLogger(__name__)

RESTARTS = 3
"""How many times a broken pool of key processes is started again before keys are made in a
thread for the rest of the operator's life."""


class KeyMaker(Protocol):
    """Makes private keys off the caller's thread; `submit` is safe from any thread."""

    @property
    def workers(self) -> int:
        """How many keys it makes at once."""
        ...

    def submit(self, algorithm: str) -> Future[bytes]:
        """A future PKCS#8 PEM private key of `algorithm`."""
        ...

    def close(self) -> None:
        """Stop making keys (a key in the making is finished, then dropped)."""
        ...


class ThreadKeys:
    """Keys made one at a time in a thread of their own (never one of the threads the
    operator's Kubernetes calls run in, the event loop's default executor)."""

    def __init__(
        self,
        generate: Callable[[str], bytes] = generate_private_key,
        thread_name_prefix: str = "dkim-spare",
    ) -> None:
        self._generate = generate
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name_prefix)

    @property
    def workers(self) -> int:
        return 1

    def submit(self, algorithm: str) -> Future[bytes]:
        return self._executor.submit(self._generate, algorithm)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ProcessKeys:
    """Keys made in `workers` spawned processes (default: `usable_cpus()`), started on the
    first `submit`; started again when they break, up to `RESTARTS` times, and then in a
    thread (`ThreadKeys`)."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = max(1, workers if workers is not None else usable_cpus())
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._restarts = 0
        self._broken = False
        self._closed = False
        self._fallback = ThreadKeys(generate_private_key, thread_name_prefix="dkim-keygen")

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def restarts(self) -> int:
        """How many times the processes were started again after they broke."""
        return self._restarts

    @property
    def broken(self) -> bool:
        """Whether the pool broke more than `RESTARTS` times and keys are made in a thread."""
        return self._broken

    def submit(self, algorithm: str) -> Future[bytes]:
        made: Future[bytes] = Future()
        self._submit(algorithm, made)
        return made

    def _submit(self, algorithm: str, made: Future[bytes]) -> None:
        """Make a key for `made`: in the pool, again in the next one if this one breaks
        first, or in the thread."""
        pooled: Future[bytes] | None = None
        with self._lock:
            pool = None if self._broken or self._closed else self._started_pool()
            if pool is not None:
                with contextlib.suppress(BrokenProcessPool):  # it broke before this submit
                    pooled = pool.submit(generate_private_key, algorithm)
        if pool is None:
            _chain(self._fallback.submit(algorithm), made)
        elif pooled is None:
            self._replace(pool)
            self._submit(algorithm, made)
        else:
            pooled.add_done_callback(lambda source: self._settle(source, pool, algorithm, made))

    def _started_pool(self) -> ProcessPoolExecutor:
        """The pool, started now if there is none (called with the lock held)."""
        if self._pool is None:
            # spawn: a fresh interpreter that imports only what the key needs; fork would
            # copy a process with threads (locks held mid-call) and an event loop.
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def _settle(
        self, source: Future[bytes], pool: ProcessPoolExecutor, algorithm: str, made: Future[bytes]
    ) -> None:
        """`source` (from `pool`) finished: its key for `made`, or, when the pool broke under
        it, the key from the next pool (this runs in the broken pool's own thread)."""
        if not source.cancelled() and isinstance(source.exception(), BrokenProcessPool):
            self._replace(pool)
            self._submit(algorithm, made)
        else:
            _copy(source, made)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """`broken` stopped: the next submit starts a new pool, or (after `RESTARTS` breaks)
        keys go to the thread. Only the first of the futures that saw it break counts it."""
        with self._lock:
            if self._pool is not broken:
                return
            self._pool = None
            if self._restarts < RESTARTS:
                self._restarts += 1
                message = (
                    "the DKIM key processes stopped (a worker was killed?): started again "
                    f"({self._restarts} of {RESTARTS} restarts)"
                )
            else:
                self._broken = True
                message = (
                    f"the DKIM key processes stopped again after {RESTARTS} restarts: keys are "
                    "made in a thread of the operator from now on, one at a time; restart the "
                    "operator to use every CPU again"
                )
        log.warning(message)
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._fallback.close()


def _chain(source: Future[bytes], target: Future[bytes]) -> None:
    """Complete `target` as `source` completes."""
    source.add_done_callback(lambda finished: _copy(finished, target))


def _copy(source: Future[bytes], target: Future[bytes]) -> None:
    """Give the finished `source`'s outcome to `target` (unless `target` was cancelled)."""
    if source.cancelled():
        target.cancel()
        return
    with contextlib.suppress(InvalidStateError):  # `target` was cancelled meanwhile
        if (error := source.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(source.result())
