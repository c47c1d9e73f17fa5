"""`PrivateService` (dev/process.py) with a tiny real daemon: a Python one-liner on a port."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from penguinmails.devstack import process as process_module
from penguinmails.devstack.ports import free_port, is_listening
from penguinmails.devstack.process import PrivateService, log_tail, stop_process

# Listens on argv[1]; a taken port prints what the real daemons print, then exits 1.
_LISTENER = """
import signal, socket, sys, time
sock = socket.socket()
try:
    sock.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as error:
    print("bind failed:", error, flush=True)
    sys.exit(1)
sock.listen()
print("listening", flush=True)
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    time.sleep(1)
"""


class ToyError(RuntimeError):
    pass


class Toy(PrivateService):
    display_name = "toy"
    error = ToyError
    bind_failure = re.compile(r"Address already in use")
    poll_interval = 0.01

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        *,
        mode: str = "normal",
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(root, root / "toy.log", port=port, start_timeout=start_timeout)
        self.mode = mode
        self.finished = 0
        self.cleaned = 0

    def _command(self, port: int) -> list[str]:
        return [sys.executable, "-c", _LISTENER, str(port), self.mode]

    def _ready(self) -> bool:
        # Our own "listening" line, not just an open port: on a retry the port may be taken by
        # somebody else, who would answer for us.
        if self.mode == "never-ready":
            # Never ready, but only once the child has written its line: on a loaded machine
            # the start timeout could pass before Python even ran, leaving no log to report.
            while "listening" not in self.log_tail():
                time.sleep(self.poll_interval)
            return False
        return "listening" in self.log_tail()

    def _finish(self) -> None:
        self.finished += 1

    def _cleanup(self) -> None:
        self.cleaned += 1


def _gone(pid: int) -> bool:
    try:
        # A zombie is gone for our purpose: the launcher reaps its own children.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_start_stop_and_the_public_surface(tmp_path: Path) -> None:
    toy = Toy(tmp_path / "toy")
    with pytest.raises(ToyError, match="toy is not started"):
        _ = toy.port
    assert toy.pid is None and not toy.running
    with toy as started:
        assert started is toy
        assert toy.running and toy.running_check() and toy.pid is not None
        assert is_listening(toy.port)
        assert toy.started_in > 0 and toy.finished == 1
        assert toy in process_module._running
        assert toy.start() is toy  # already running: a no-op
        pid, port = toy.pid, toy.port
    assert _gone(pid) and not toy.running and toy.pid is None
    assert toy not in process_module._running and toy.cleaned == 1
    assert "listening" in (tmp_path / "toy" / "toy.log").read_text()
    toy.stop()  # idempotent
    with toy:  # a restart keeps its port, so addresses handed out before stay valid
        assert toy.port == port


def test_a_taken_port_is_retried_with_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Toy(tmp_path / "first") as first:
        taken = first.port
        ports = iter([taken])
        monkeypatch.setattr(Toy, "_new_port", lambda self: next(ports, None) or free_port())
        with Toy(tmp_path / "second") as second:
            assert second.port != taken
            assert "Address already in use" in (tmp_path / "second" / "toy.log").read_text()

        # A port the caller asked for is never swapped for another: the error quotes the log.
        fixed = Toy(tmp_path / "fixed", port=taken)
        with pytest.raises(ToyError, match="exited with code 1") as failure:
            fixed.start()
        assert "Address already in use" in str(failure.value)
        assert f"port {taken}" in str(failure.value)
        assert fixed.pid is None and fixed not in process_module._running


def test_not_ready_in_time_is_an_error_with_the_log_and_no_process(tmp_path: Path) -> None:
    toy = Toy(tmp_path / "toy", mode="never-ready", start_timeout=0.5)
    with pytest.raises(ToyError, match=r"was not ready within 0.5s") as failure:
        toy.start()
    assert "listening" in str(failure.value)  # the log tail
    assert toy.pid is None and toy.cleaned == 1 and toy.finished == 0


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    toy = Toy(tmp_path / "toy", mode="ignore-term").start()
    pid = toy.pid
    assert pid is not None
    toy.stop(timeout=0.3)
    assert _gone(pid)


def test_stop_process_reports_a_survivor() -> None:
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        # SIGCONT does not end `sleep`: nothing in the steps kills it.
        assert not stop_process(child, ((signal.SIGCONT, 0.1),), 0.1)
        assert stop_process(child, ((None, 0.1), (signal.SIGKILL, 5.0)), 0.1)
        assert child.returncode == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert log_tail(log) == "(no log)"
    log.write_text("old\n")
    offset = log.stat().st_size
    assert log_tail(log, offset) == "(log is empty)"
    with log.open("a") as out:
        out.writelines(f"line {n}\n" for n in range(50))
    assert log_tail(log, offset, lines=2) == "line 48\nline 49"
    assert "old" not in log_tail(log, offset, lines=100)
