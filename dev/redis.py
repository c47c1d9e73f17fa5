"""A private, throwaway Redis on loopback for `make run` and the tests.

    with RedisServer(base_dir) as server:
        client = redis.asyncio.from_url(server.url)

Own port, own directory (`base_dir/redis/`, holding its log), no persistence (no RDB snapshots,
no AOF). The binary is `$PM_REDIS_SERVER` or `redis-server` from PATH. Redis runs as whoever we
are (it warns about root but works).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from penguinmails.devstack.ports import LOOPBACK, free_port

REDIS_SERVER_ENV = "PM_REDIS_SERVER"

NO_PERSISTENCE: Mapping[str, str] = {
    "save": "",
    "appendonly": "no",
    "daemonize": "no",
    "protected-mode": "yes",
    "loglevel": "warning",
    "databases": "16",
}

_PORT_ATTEMPTS = 3
_BIND_FAILURE = re.compile(r"Address already in use|Could not create server TCP listening socket")


class RedisError(RuntimeError):
    """The local Redis could not be started or stopped."""


@dataclass(frozen=True)
class ExistingRedis:
    """A Redis somebody else runs (e.g. `PM_REDIS_URL`); same read surface as a server."""

    url: str
    started_in: float = 0.0


def find_redis_server() -> str:
    """`$PM_REDIS_SERVER`, else `redis-server` from PATH."""
    configured = os.environ.get(REDIS_SERVER_ENV)
    if configured:
        if not Path(configured).is_file():
            raise RedisError(f"${REDIS_SERVER_ENV}={configured} does not exist")
        return configured
    found = shutil.which("redis-server")
    if found is None:
        raise RedisError(
            "redis-server not found: install it (Debian: apt-get install redis-server) "
            f"or point ${REDIS_SERVER_ENV} at the binary"
        )
    return found


def _log_tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _server_pid(host: str, port: int) -> int | None:
    """The `process_id` of the Redis answering on host:port, None if none answers (yet).

    Checking the pid, not just PING, makes sure it is our server and not another one that
    happened to hold the port we were given.
    """
    try:
        with socket.create_connection((host, port), timeout=0.25) as sock:
            sock.sendall(b"INFO server\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
            header, _, body = data.partition(b"\r\n")
            if not header.startswith(b"$"):
                return None  # e.g. -LOADING
            length = int(header[1:])
            while len(body) < length:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                body += chunk
    except (OSError, ValueError):
        return None
    match = re.search(rb"^process_id:(\d+)", body, re.MULTILINE)
    return int(match.group(1)) if match else None


class RedisServer:
    """One private Redis instance; context manager or `start()` / `stop()` (idempotent)."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
        binary: str | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.root = self.base_dir / "redis"
        self.log_path = self.root / "redis.log"
        self.host = LOOPBACK
        self.start_timeout = start_timeout
        self.started_in: float = 0.0
        self._requested_port = port
        self._port: int | None = None
        self._settings = {**NO_PERSISTENCE, **(settings or {})}
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisError("Redis is not started")
        return self._port

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> RedisServer:
        """Start and wait until it answers (checked by its pid). Returns self."""
        if self.running:
            return self
        began = time.monotonic()
        _register(self)
        try:
            binary = self._binary or find_redis_server()
            self.root.mkdir(parents=True, exist_ok=True)
            self._launch(binary)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis shuts down without saving: no save points) and wait; SIGKILL if stuck."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(sig)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(wait)
                    if process.poll() is not None:
                        break
                else:
                    raise RedisError(f"redis-server (pid {process.pid}) did not exit")
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            _unregister(self)

    def _launch(self, binary: str) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            reuse = self._port if attempt == 1 else None
            self._port = self._requested_port or reuse or free_port(self.host)
            settings = {
                **self._settings,
                "bind": self.host,
                "port": str(self._port),
                "dir": str(self.root),
                "logfile": "",  # stdout, which goes to our log file
            }
            command = [binary]
            for key, value in settings.items():
                command += [f"--{key}", value]
            self._log = self.log_path.open("ab")
            offset = self._log.tell()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
            exit_code = self._wait_ready(self._process)
            if exit_code is None:
                return
            self._process = None
            self._log.close()
            self._log = None
            tail = _log_tail(self.log_path, offset)
            if (
                self._requested_port is None
                and attempt < _PORT_ATTEMPTS
                and _BIND_FAILURE.search(tail)
            ):
                continue  # somebody took the port between free_port() and bind: try another
            raise RedisError(
                f"redis-server exited with code {exit_code} while starting on port {self._port}; "
                f"last lines of {self.log_path}:\n{tail}"
            )

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> int | None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            exit_code = process.poll()
            if exit_code is not None:
                return exit_code
            if _server_pid(self.host, self.port) == process.pid:
                return None
            time.sleep(0.01)
        raise RedisError(
            f"Redis did not answer within {self.start_timeout:.0f}s; "
            f"last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
        )


_running: set[RedisServer] = set()
_running_lock = threading.Lock()


def _register(server: RedisServer) -> None:
    with _running_lock:
        _running.add(server)


def _unregister(server: RedisServer) -> None:
    with _running_lock:
        _running.discard(server)


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)
