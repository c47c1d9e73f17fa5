"""A private OpenSSH server on loopback, standing for a freshly created VPS in the tests.

    with SshServer(base_dir, authorized_keys=[public_line]) as ssh:
        ssh.host, ssh.port, ssh.user      # 127.0.0.1, a free high port, who may log in

Own port, host key, config and authorized_keys in `base_dir/sshd/`; keys only (no passwords,
no PAM), SFTP through `internal-sftp`. It runs as whoever we are: as root it lets root log in
with a key (as a new VPS does), otherwise the current user. Debian: apt-get install
openssh-server (the system-wide service is not used).
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from penguinmails.devstack.process import PrivateService, find_binary

# "Bind to port N on 127.0.0.1 failed: Address already in use." then "Cannot bind any address."
_BIND_FAILURE = re.compile(r"Address already in use|Cannot bind any address")


class SshServerError(RuntimeError):
    """The local sshd could not be set up, started or stopped."""


def find_sshd() -> str:
    """`sshd` from PATH (or /usr/sbin)."""
    return find_binary(
        "sshd", env=None, install="Debian: apt-get install openssh-server", error=SshServerError
    )


class SshServer(PrivateService):
    """One private sshd; context manager or `start()` / `stop()` (idempotent)."""

    display_name = "sshd"
    error = SshServerError
    bind_failure = _BIND_FAILURE
    poll_interval = 0.05

    def __init__(
        self,
        base_dir: Path,
        *,
        authorized_keys: Sequence[str] = (),
        port: int | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        root = Path(base_dir).absolute() / "sshd"
        super().__init__(root, root / "sshd.log", port=port, start_timeout=start_timeout)
        self.user = getpass.getuser()
        self._authorized = list(authorized_keys)
        self._binary: str | None = None

    @property
    def host_key_path(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    def authorize(self, public_key: str) -> None:
        """Allow one more key (read by sshd at each login, so no restart is needed)."""
        self._authorized.append(public_key)
        self._write_authorized_keys()

    # -- hooks ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Host key and authorized_keys; the config names the port, so `_command` writes it."""
        self._binary = find_sshd()
        super()._prepare()
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

    def _command(self, port: int) -> list[str]:
        assert self._binary is not None
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {port}\n"
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
        return [self._binary, "-D", "-e", "-f", str(config)]

    def _ready(self) -> bool:
        """sshd logged that it listens: a bare connect would also accept whoever holds the port."""
        return f"Server listening on {self.host} port {self.port}." in self.log_tail(lines=200)

    def _write_authorized_keys(self) -> None:
        path = self.root / "authorized_keys"
        path.write_text("".join(f"{line.strip()}\n" for line in self._authorized))
        path.chmod(0o600)
