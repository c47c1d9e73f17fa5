"""A private OpenSSH server on loopback, standing for a freshly created VPS in the tests.

    with SshServer(base_dir, authorized_keys=[public_line]) as ssh:
        ssh.host, ssh.port, ssh.user      # 127.0.0.1, a free high port, who may log in

Own port, host key, config and authorized_keys in `base_dir/sshd/`; keys only (no passwords,
no PAM), SFTP through `internal-sftp`. It runs as whoever we are: as root it lets root log in
with a key (as a new VPS does), otherwise the current user. Debian: apt-get install
openssh-server (the system-wide service is not used).
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from penguinmails.devstack.ports import LOOPBACK, free_port, is_listening


class SshServerError(RuntimeError):
    """The local sshd could not be set up, started or stopped."""


def find_sshd() -> str:
    found = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise SshServerError("sshd not found: apt-get install openssh-server")
    return found


class SshServer:
    def __init__(
        self,
        base_dir: Path,
        *,
        authorized_keys: Sequence[str] = (),
        port: int | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.root = Path(base_dir).absolute() / "sshd"
        self.host = LOOPBACK
        self.user = getpass.getuser()
        self.start_timeout = start_timeout
        self._authorized = list(authorized_keys)
        self._requested_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise SshServerError("sshd is not started")
        return self._port

    @property
    def host_key_path(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def log_path(self) -> Path:
        return self.root / "sshd.log"

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def authorize(self, public_key: str) -> None:
        """Allow one more key (read by sshd at each login, so no restart is needed)."""
        self._authorized.append(public_key)
        self._write_authorized_keys()

    def start(self) -> SshServer:
        if self._process is not None and self._process.poll() is None:
            return self
        sshd = find_sshd()
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # sshd insists on its privilege-separation directory when started as root.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        if not self.host_key_path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key_path)],
                check=True,
                capture_output=True,
            )
        self._write_authorized_keys()
        self._port = self._requested_port or free_port(self.host)
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self._port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.host_key_path}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "Subsystem sftp internal-sftp\n"
        )
        _register(self)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise SshServerError(f"sshd exited while starting:\n{tail}")
            if is_listening(self._port, self.host):
                return self
            time.sleep(0.05)
        self.stop()
        raise SshServerError(f"sshd did not listen on {self.host}:{self._port}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        _unregister(self)

    def _write_authorized_keys(self) -> None:
        path = self.root / "authorized_keys"
        path.write_text("".join(f"{line.strip()}\n" for line in self._authorized))
        path.chmod(0o600)


_running: set[SshServer] = set()
_lock = threading.Lock()


def _register(server: SshServer) -> None:
    with _lock:
        _running.add(server)


def _unregister(server: SshServer) -> None:
    with _lock:
        _running.discard(server)


@atexit.register
def _stop_all() -> None:
    with _lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
