"""One way to run a private daemon of the local stack: `PrivateService`, and the helpers it uses.

A launcher (PostgreSQL, Redis, Knot, PowerDNS, Postfix) subclasses `PrivateService` and keeps
only what is specific to its daemon:

    class RedisServer(PrivateService):
        display_name = "redis-server"                        # for messages
        error = RedisError                                    # raised for every failure
        bind_failure = re.compile(r"Address already in use")  # retry with another port

        def _command(self, port: int) -> list[str]: ...   # argv (may write a config first)
        def _ready(self) -> bool: ...                       # polled until True

The base class does the rest the same way for every daemon: output appended to a log file,
spawn in its own session (optionally as another user), wait until `_ready()` with a bounded
timeout, retry with a fresh port when the log shows the bind failed, an error quoting the log
tail, `started_in`, stop by signals with escalation up to SIGKILL of the whole process group,
an interpreter-exit registry, and the context-manager / `port` / `pid` / `running` surface.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

from penguinmails.devstack.ports import LOOPBACK, free_port

PORT_ATTEMPTS = 3

# (signal, seconds to wait for the exit after sending it). A None signal sends nothing (the stop
# was asked for some other way, e.g. `postfix stop`); a None wait means "the caller's timeout".
StopSteps = Sequence[tuple[signal.Signals | None, float | None]]
TERM_THEN_KILL: StopSteps = ((signal.SIGTERM, None), (signal.SIGKILL, 5.0))


def find_binary(name: str, *, env: str | None, install: str, error: type[Exception]) -> str:
    """`$env` if set (it must exist), else `name` from PATH or the sbin directories.

    The sbin fallback is there because daemons live in /usr/sbin, which a non-root PATH lacks.
    `install` says how to get it ("Debian: apt-get install knot"), for the error.
    """
    configured = os.environ.get(env) if env else None
    if configured:
        if not Path(configured).is_file():
            raise error(f"${env}={configured} does not exist")
        return configured
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        where = f" or point ${env} at the binary" if env else ""
        raise error(f"{name} not found: install it ({install}){where}")
    return found


def log_tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    """The last `lines` lines of `path` written after byte `offset` (what this launch logged)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def as_user(uid_gid: tuple[int, int] | None) -> dict[str, Any]:
    """Popen/run keyword arguments that start the child as uid:gid with no supplementary groups.

    Done by the child itself (what `setpriv`/`runuser` would do, without an intermediate
    process), so the daemon stays our direct child and receives our signals.
    """
    if uid_gid is None:
        return {}
    uid, gid = uid_gid
    return {"user": uid, "group": gid, "extra_groups": []}


def stop_process(process: subprocess.Popen[bytes], steps: StopSteps, timeout: float) -> bool:
    """Send each signal of `steps` in turn until the process exits; True once it has.

    The last step goes to the whole process group (every daemon runs in a session of its own):
    children of a master killed outright (Postfix's smtpd, PostgreSQL's backends) would
    otherwise outlive it.
    """
    for index, (sig, wait) in enumerate(steps):
        if process.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sig is not None and index == len(steps) - 1:
                os.killpg(process.pid, sig)
            elif sig is not None:
                process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout if wait is None else wait)
    return process.poll() is not None


class Startable(ABC):
    """`with x:` runs `x.start()` and `x.stop()`; for anything with those two methods."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PrivateService(Startable):
    """One private daemon on loopback; subclass it, see the module docstring.

    Hooks, in the order `start()` calls them: `_prepare()` (directories, config, initdb...),
    then per attempt `_new_port()` (unless a port was asked for or is kept from a previous run),
    `_command(port)` and `_ready()`, and finally `_finish()` (e.g. create a database). Any
    exception stops what was started. `stop()` is idempotent and also runs at interpreter exit.
    """

    display_name: ClassVar[str]
    """For messages: "PostgreSQL", "knotd"..."""
    error: ClassVar[type[Exception]]
    """Raised for every failure, so each launcher keeps its own exception type."""
    bind_failure: ClassVar[re.Pattern[str] | None] = None
    """Log text meaning the bind failed: retried with a fresh port if the caller chose none."""
    stop_steps: ClassVar[StopSteps] = TERM_THEN_KILL
    stop_timeout: ClassVar[float] = 10.0
    poll_interval: ClassVar[float] = 0.02

    def __init__(
        self,
        root: Path,
        log_path: Path,
        *,
        port: int | None = None,
        start_timeout: float,
        host: str = LOOPBACK,
    ) -> None:
        self.root = root
        self.log_path = log_path
        self.host = host
        self.start_timeout = start_timeout
        self.started_in: float = 0.0
        self._requested_port = port
        self._port: int | None = None
        self._user: tuple[int, int] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    # -- public surface ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise self.error(f"{self.display_name} is not started")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def running_check(self) -> bool:
        """`running` as a callable, for pollers that stop early once the daemon died."""
        return self.running

    def start(self) -> Self:
        """Prepare, launch, wait until ready, finish. Returns self; a no-op if running."""
        if self.running:
            return self
        began = time.monotonic()
        _register(self)
        try:
            self._prepare()
            self._launch()
            self._finish()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Signal the daemon (`stop_steps`) and wait; the error if it is still alive after."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                self._terminate(process, self.stop_timeout if timeout is None else timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            self._cleanup()
            _unregister(self)

    def log_tail(self, lines: int = 30) -> str:
        """What the daemon logged since its last launch."""
        return log_tail(self._output_path, self._log_offset, lines)

    # -- hooks ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Before the first attempt: directories, config and data that do not depend on the port."""
        self.root.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def _command(self, port: int) -> list[str]:
        """The argv listening on `port`; may first write a config file naming it."""

    @abstractmethod
    def _ready(self) -> bool:
        """True once the daemon serves; polled while the process lives."""

    def _finish(self) -> None:
        """After the daemon is ready (e.g. create a database)."""

    def _cleanup(self) -> None:
        """After the daemon stopped (or failed to start)."""

    def _new_port(self) -> int:
        return free_port(self.host)

    def _env(self) -> dict[str, str] | None:
        """The daemon's environment; None inherits ours."""
        return None

    def _terminate(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        if not stop_process(process, self.stop_steps, timeout):
            raise self.error(f"{self.display_name} (pid {process.pid}) did not exit")

    @property
    def _output_path(self) -> Path:
        """Where the daemon's stdout and stderr go."""
        return self.log_path

    # -- the launch loop --------------------------------------------------------------------

    def _launch(self) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            # A restart keeps the port it had, so addresses handed out before stay valid.
            reuse = self._port if attempt == 1 else None
            self._port = self._requested_port or reuse or self._new_port()
            command = self._command(self._port)
            self._log = self._output_path.open("ab")
            self._log_offset = self._log.tell()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self._env(),
                start_new_session=True,
                **as_user(self._user),
            )
            problem = self._wait_ready(self._process)
            if problem is None:
                return
            process, self._process = self._process, None
            stop_process(process, ((signal.SIGKILL, 5.0),), 5.0)
            self._log.close()
            self._log = None
            tail = self.log_tail()
            if (
                self._requested_port is None
                and attempt < PORT_ATTEMPTS
                and self.bind_failure is not None
                and self.bind_failure.search(tail)
            ):
                continue  # somebody took the port between _new_port() and bind: try another
            raise self.error(
                f"{self.display_name} {problem} while starting on port {self._port}; "
                f"last lines of {self._output_path}:\n{tail}"
            )

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> str | None:
        """None once ready, else what went wrong (it exited, or the timeout passed)."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            exit_code = process.poll()
            if exit_code is not None:
                return f"exited with code {exit_code}"
            if self._ready():
                return None
            if time.monotonic() > deadline:
                return f"was not ready within {self.start_timeout:g}s"
            time.sleep(self.poll_interval)


# Services still running when the interpreter exits are stopped then, so a test run or a
# `make run` that dies on an exception leaves no daemon behind.
_running: set[PrivateService] = set()
_running_lock = threading.Lock()


def _register(service: PrivateService) -> None:
    with _running_lock:
        _running.add(service)


def _unregister(service: PrivateService) -> None:
    with _running_lock:
        _running.discard(service)


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        services = list(_running)
    for service in services:
        with contextlib.suppress(Exception):
            service.stop(timeout=5.0)
