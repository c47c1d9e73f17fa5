"""The DKIM key processes (common/dkim/keygen.py) and the spare keys they feed
(common/dkim/spare.py): keys made in spawned processes sized from the CPUs we may use, each
handed out once, a broken pool falling back to a thread, and nothing left running at close."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest

from penguinmails.common.cpus import cgroup_cpu_limit, usable_cpus
from penguinmails.common.dkim import keygen
from penguinmails.common.dkim.keygen import ProcessKeys, ThreadKeys
from penguinmails.common.dkim.keys import load_key_set, secret_data
from penguinmails.common.dkim.rotation import advance, algorithms_to_generate
from penguinmails.common.dkim.spare import SpareKeys

from .test_dkim_rotation_start import POLICY, T0, active_keys


def test_the_cpus_come_from_the_affinity_capped_by_the_cgroup_limit(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert cgroup_cpu_limit(tmp_path) is None
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one process
    assert cgroup_cpu_limit(tmp_path) == 0.5
    assert usable_cpus(tmp_path) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 1.5
    assert usable_cpus(v1) == min(affinity, 2)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(v1) == affinity


def test_spares_are_as_many_as_the_maker_makes_at_once_and_each_is_handed_out_once() -> None:
    made = iter(range(1, 1000))
    lock = threading.Lock()

    def generate(algorithm: str) -> bytes:
        with lock:
            return f"{algorithm}-{next(made)}".encode()

    keys = ProcessKeys(3)
    assert keys.workers == 3
    assert SpareKeys(keys).depth == 3  # made nothing: the processes start on the first key
    keys.close()
    spares = SpareKeys(ThreadKeys(generate), depth=3)
    try:
        spares.prepare()
        while spares.ready("rsa2048") < 3:
            threading.Event().wait(0.01)

        async def burst() -> list[bytes]:
            return list(await asyncio.gather(*(spares.take("rsa2048") for _ in range(10))))

        taken = asyncio.run(burst())
        # Ten domains at once: the three spares first, in the order they were made, then
        # new ones; no key twice.
        assert taken[:3] == [b"rsa2048-1", b"rsa2048-2", b"rsa2048-3"]
        assert len(set(taken)) == 10
    finally:
        spares.close()


def test_a_pass_cancelled_while_it_waits_leaves_its_key_to_the_next() -> None:
    gate = threading.Event()
    made: list[bytes] = []

    def generate(algorithm: str) -> bytes:
        gate.wait()
        made.append(f"{algorithm}-{len(made) + 1}".encode())
        return made[-1]

    spares = SpareKeys(ThreadKeys(generate), depth=1)

    async def scenario() -> bytes:
        waiting = asyncio.create_task(spares.take("rsa2048"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        return await spares.take("rsa2048")

    try:
        assert asyncio.run(scenario()) == b"rsa2048-1"
    finally:
        gate.set()
        spares.close()


def test_rsa_keys_are_made_in_worker_processes_and_none_outlives_close() -> None:
    before = set(multiprocessing.active_children())
    keys = ProcessKeys(2)
    spares = SpareKeys(keys)
    try:

        async def three() -> list[bytes]:
            return list(await asyncio.gather(*(spares.take("rsa2048") for _ in range(3))))

        taken = asyncio.run(three())
        assert len(set(taken)) == 3
        assert all(b"BEGIN PRIVATE KEY" in key and len(key) > 1600 for key in taken)
        workers = set(multiprocessing.active_children()) - before
        assert len(workers) == 2
        assert all(worker.pid != os.getpid() for worker in workers)
    finally:
        spares.close()
    assert not set(multiprocessing.active_children()) - before
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(spares.take("rsa2048"))


def kill_worker(before: set[multiprocessing.process.BaseProcess]) -> int:
    """SIGKILL the one key process started since `before` (the OOM killer's way); its pid."""
    (worker,) = set(multiprocessing.active_children()) - before
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    return worker.pid


def test_a_killed_key_process_is_started_again_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = set(multiprocessing.active_children())
    keys = ProcessKeys(1)
    try:
        first = keys.submit("rsa2048").result()
        killed = kill_worker(before)
        with caplog.at_level(logging.WARNING, logger="penguinmails.common.dkim.keygen"):
            # The pool notices the dead worker on this submit or fails this future: either
            # way the key comes, made by a new process.
            second = keys.submit("rsa2048").result(timeout=120)
            third = keys.submit("rsa2048").result(timeout=120)
        assert (keys.restarts, keys.broken) == (1, False)
        (worker,) = set(multiprocessing.active_children()) - before
        assert worker.pid != killed
        assert len({first, second, third}) == 3
        assert all(b"BEGIN PRIVATE KEY" in key for key in (second, third))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "started again (1 of 3 restarts)" in warnings[0]
        # The key never reaches a log.
        assert all("PRIVATE KEY" not in r.getMessage() for r in caplog.records)
    finally:
        keys.close()
    assert not set(multiprocessing.active_children()) - before


def test_a_pool_that_keeps_breaking_gives_way_to_a_thread(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keygen, "RESTARTS", 1)
    before = set(multiprocessing.active_children())
    keys = ProcessKeys(1)
    try:
        made = [keys.submit("rsa2048").result()]
        with caplog.at_level(logging.WARNING, logger="penguinmails.common.dkim.keygen"):
            for _ in range(2):
                kill_worker(before)
                made.append(keys.submit("rsa2048").result(timeout=120))
            made.append(keys.submit("rsa2048").result(timeout=120))
        assert (keys.restarts, keys.broken) == (1, True)
        assert len(set(made)) == 4
        assert all(b"BEGIN PRIVATE KEY" in key for key in made)
        assert not set(multiprocessing.active_children()) - before  # the thread's turn
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert "in a thread" in warnings[1]
    finally:
        keys.close()


def test_the_keys_advance_generates_are_known_before_it_runs() -> None:
    keys = active_keys()
    assert algorithms_to_generate(keys, POLICY, now=T0, verified=()) == []
    assert algorithms_to_generate(keys, POLICY, now=T0, verified=(), rotate_token="now") == [
        "ed25519"
    ]
    wanted = algorithms_to_generate(
        load_key_set(secret_data(keys)), POLICY, now=T0 + POLICY.rotate_after, verified=()
    )
    made: list[str] = []

    def generate(algorithm: str) -> bytes:
        made.append(algorithm)
        return b"k"

    advance(keys, POLICY, now=T0 + POLICY.rotate_after, verified=(), generate=generate)
    assert wanted == made == ["ed25519"]
