"""A private, throwaway Redis on loopback for `make run` and the tests.

    with RedisServer(base_dir) as server:
        client = redis.asyncio.from_url(server.url)

Own port, own directory (`base_dir/redis/`, holding its log), no persistence (no RDB snapshots,
no AOF). The binary is `$PM_REDIS_SERVER` or `redis-server` from PATH. Redis runs as whoever we
are (it warns about root but works).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from penguinmails.devstack.ports import free_port
from penguinmails.devstack.process import PrivateService, find_binary

REDIS_SERVER_ENV = "PM_REDIS_SERVER"

NO_PERSISTENCE: Mapping[str, str] = {
    "save": "",
    "appendonly": "no",
    "daemonize": "no",
    "protected-mode": "yes",
    "loglevel": "warning",
    "databases": "16",
}

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
    return find_binary(
        "redis-server",
        env=REDIS_SERVER_ENV,
        install="Debian: apt-get install redis-server",
        error=RedisError,
    )


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


class RedisServer(PrivateService):
    """One private Redis instance; context manager or `start()` / `stop()` (idempotent).

    `stop()` sends SIGTERM: with no save points Redis shuts down without saving.
    """

    display_name = "redis-server"
    error = RedisError
    bind_failure = _BIND_FAILURE
    poll_interval = 0.01

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
        root = self.base_dir / "redis"
        super().__init__(root, root / "redis.log", port=port, start_timeout=start_timeout)
        self._settings = {**NO_PERSISTENCE, **(settings or {})}
        self._binary = binary

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return f"redis://{self.host}:{self.port}/0"

    def _prepare(self) -> None:
        self._binary = self._binary or find_redis_server()
        super()._prepare()

    def _new_port(self) -> int:
        # Looked up in this module at call time, so a test can hand out a taken port.
        return free_port(self.host)

    def _command(self, port: int) -> list[str]:
        assert self._binary is not None
        settings = {
            **self._settings,
            "bind": self.host,
            "port": str(port),
            "dir": str(self.root),
            "logfile": "",  # stdout, which goes to our log file
        }
        command = [self._binary]
        for key, value in settings.items():
            command += [f"--{key}", value]
        return command

    def _ready(self) -> bool:
        return _server_pid(self.host, self.port) == self.pid
