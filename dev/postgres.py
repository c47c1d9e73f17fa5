"""A private, throwaway PostgreSQL server on loopback for `make run` and the tests.

    with PostgresServer(base_dir) as pg:
        pool = await asyncpg.create_pool(pg.dsn)

Each server gets its own port, data directory and unix-socket directory inside `base_dir`
(`base_dir/postgres/{data,run,postgres.log}`), settings that trade durability for speed, trust
authentication for the superuser `postgres` on loopback only, and an empty database
`penguinmails`. Binaries come from `$PM_PG_BIN` or the newest `/usr/lib/postgresql/*/bin`.

PostgreSQL refuses to run as root. When this process is root, initdb and postgres run as the
`postgres` system user (Debian's package creates it): the child is started with the uid/gid of
that user and no supplementary groups (what `setpriv`/`runuser` would do, without an intermediate
process, so the postmaster is our direct child and receives our signals). The instance directory
is chowned to that user, and `base_dir` is made searchable (o+x: enter, not list) so that user
can reach it, as is any directory of ours between the system temp dir and `base_dir` (say the
0700 `mkdtemp()` a stack lives in). Other ancestors must already be searchable; if one is not,
`start()` says which.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from penguinmails.devstack.process import PrivateService, as_user, log_tail

PG_BIN_ENV = "PM_PG_BIN"
SUPERUSER = "postgres"
DEFAULT_DATABASE = "penguinmails"
SERVICE_USER = "postgres"

# Durability is worthless for a throwaway instance; these make initdb + start take ~1 s.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "checkpoint_timeout": "1d",
    "max_connections": "200",
    "jit": "off",
    "TimeZone": "UTC",
    "log_min_messages": "warning",
}

_SOCKET_NAME_LEN = len("/.s.PGSQL.65535")
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_BIND_FAILURE = re.compile(r"could not bind|could not create listen socket|Address already in use")
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """The local PostgreSQL could not be set up, started or stopped."""


@dataclass(frozen=True)
class ExistingPostgres:
    """A database somebody else runs (e.g. `PM_DATABASE_URL`); same read surface as a server."""

    dsn: str
    started_in: float = 0.0


def find_pg_bin() -> Path:
    """The directory holding `initdb` and `postgres`: `$PM_PG_BIN`, else the newest Debian one."""
    configured = os.environ.get(PG_BIN_ENV)
    if configured:
        path = Path(configured)
        if not (path / "postgres").is_file() or not (path / "initdb").is_file():
            raise PostgresError(f"${PG_BIN_ENV}={configured} has no postgres/initdb binaries")
        return path
    candidates: list[tuple[tuple[int, ...], Path]] = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        version = path.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version) and (path / "postgres").is_file():
            candidates.append((tuple(int(p) for p in version.split(".")), path))
    if candidates:
        return max(candidates)[1]
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    raise PostgresError(
        "PostgreSQL binaries not found: install postgresql (Debian: apt-get install postgresql) "
        f"or point ${PG_BIN_ENV} at the directory holding initdb and postgres"
    )


class PostgresServer(PrivateService):
    """One private PostgreSQL instance; see the module docstring.

    Use it as a context manager or call `start()` / `stop()`. `stop()` is idempotent and also runs
    at interpreter exit for any server still running; a failed `start()` stops what it started.
    """

    display_name = "PostgreSQL"
    error = PostgresError
    bind_failure = _BIND_FAILURE
    # Fast shutdown (SIGINT) and wait; escalate to immediate (SIGQUIT), then SIGKILL.
    stop_steps = ((signal.SIGINT, None), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0))
    stop_timeout = 30.0

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        *,
        database: str = DEFAULT_DATABASE,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        bin_dir: Path | None = None,
    ) -> None:
        if not _DATABASE_NAME.match(database):
            raise ValueError(f"database name {database!r} must match {_DATABASE_NAME.pattern}")
        self.base_dir = Path(base_dir).absolute()
        root = self.base_dir / "postgres"
        super().__init__(root, root / "postgres.log", port=port, start_timeout=start_timeout)
        self.data_dir = self.root / "data"
        self.database = database
        self._settings = {**FAST_SETTINGS, **(settings or {})}
        self._bin_dir = bin_dir
        self._bin: Path | None = None
        self._socket_dir = self.root / "run"
        self._own_short_socket_dir = False

    # -- public surface ---------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """`postgresql://postgres@127.0.0.1:PORT/penguinmails` (superuser, trust on loopback)."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def socket_dir(self) -> Path:
        return self._socket_dir

    # -- hooks ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Find the binaries, set up directories, initdb the first time."""
        self._bin = self._bin_dir or find_pg_bin()
        self._prepare_directories()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(self._bin)

    def _command(self, port: int) -> list[str]:
        assert self._bin is not None
        settings = {
            **self._settings,
            "listen_addresses": self.host,
            "port": str(port),
            "unix_socket_directories": str(self._socket_dir),
        }
        command = [str(self._bin / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _ready(self) -> bool:
        with contextlib.suppress(OSError):
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            # Line 1 is the postmaster pid, line 8 its state (what pg_ctl -w waits for).
            return len(lines) >= 8 and lines[0] == str(self.pid) and lines[7].strip() == "ready"
        return False

    def _finish(self) -> None:
        assert self._bin is not None
        self._create_database(self._bin)

    def _cleanup(self) -> None:
        if self._own_short_socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._own_short_socket_dir = False

    # -- steps ------------------------------------------------------------------------------

    def _prepare_directories(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._user = _service_user()
        if len(str(self.root / "run")) + _SOCKET_NAME_LEN > _SUN_PATH_MAX:
            # A unix socket path is limited to 107 bytes; deep base dirs get a short one in /tmp.
            self._socket_dir = Path(tempfile.mkdtemp(prefix="pm-pg-"))
            self._own_short_socket_dir = True
        else:
            self._socket_dir = self.root / "run"
            self._socket_dir.mkdir(exist_ok=True)
        if self._user is None:
            return
        uid, gid = self._user
        _make_searchable(self.base_dir)
        # Private temporary directories above base_dir (e.g. a mkdtemp() the stack lives in,
        # 0700) get the same o+x; anything outside the temp dir is left for the error below.
        temp_root = Path(tempfile.gettempdir()).resolve()
        for directory in self.base_dir.resolve().parents:
            if temp_root in directory.parents and directory.stat().st_uid == os.geteuid():
                _make_searchable(directory)
        for path in (self.root, self._socket_dir):
            os.chown(path, uid, gid)
        if self.data_dir.exists():
            os.chown(self.data_dir, uid, gid)
        blocked = _first_unsearchable(self.root.parent, uid, gid)
        if blocked is not None:
            raise PostgresError(
                f"the {SERVICE_USER} user cannot reach {self.root}: {blocked} is not searchable "
                f"by it (mode {stat.filemode(blocked.stat().st_mode)}); use a base directory "
                "whose ancestors are world-searchable, e.g. tempfile.mkdtemp()"
            )

    def _initdb(self, bin_dir: Path) -> None:
        command = [
            str(bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]
        with self.log_path.open("ab") as log:
            offset = log.tell()
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                timeout=self.start_timeout,
                check=False,
                **as_user(self._user),
            )
        if result.returncode != 0:
            raise PostgresError(
                f"initdb failed (exit code {result.returncode}); last lines of {self.log_path}:\n"
                + log_tail(self.log_path, offset)
            )
        # Trust only the superuser, only over the private socket and loopback; anyone else
        # (login roles created by tests or by hand) needs a password.
        (self.data_dir / "pg_hba.conf").write_text(
            "# written by penguinmails.devstack.postgres\n"
            f"local all {SUPERUSER}              trust\n"
            f"host  all {SUPERUSER} 127.0.0.1/32 trust\n"
            "host  all all       127.0.0.1/32 scram-sha-256\n"
        )

    def _create_database(self, bin_dir: Path) -> None:
        psql = bin_dir / "psql"
        # psql quotes the :'db' variable itself; \gexec runs the CREATE only when it is missing.
        script = (
            "SELECT format('CREATE DATABASE %I', :'db') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\n"
            "\\gexec\n"
        )
        result = subprocess.run(
            [
                str(psql if psql.is_file() else "psql"),
                "--no-psqlrc",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                f"--set=db={self.database}",
                f"--host={self._socket_dir}",
                f"--port={self.port}",
                f"--username={SUPERUSER}",
                "--dbname=postgres",
                "--file=-",
            ],
            input=script.encode(),
            capture_output=True,
            env=self._env(),
            timeout=self.start_timeout,
            check=False,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"could not create database {self.database}: "
                + result.stderr.decode("utf-8", "replace").strip()
            )

    # -- helpers ----------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        # A clean environment: no inherited PG* variables (PGDATABASE, PGSERVICE, ...).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self._user is not None:
            env["HOME"] = str(self.root)
        return env


def _service_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresError(
            f"running as root: PostgreSQL must run as the '{SERVICE_USER}' system user, which "
            "does not exist (the Debian postgresql package creates it; or run as non-root)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _make_searchable(directory: Path) -> None:
    """Add o+x (enter, not list) to a directory."""
    mode = directory.stat().st_mode
    if not mode & stat.S_IXOTH:
        directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _first_unsearchable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory from / down to `path` that uid:gid (no other groups) cannot enter."""
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None
