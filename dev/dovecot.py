"""A private Dovecot (Debian) on loopback: the mailboxes local mail is delivered into.

    with DovecotServer(base_dir) as mailboxes:
        relay = PostfixServer(..., lmtp=f"127.0.0.1:{mailboxes.port}")  # Postfix → LMTP
        imaplib.IMAP4("127.0.0.1", mailboxes.imap_port).login("r1@dest.test", PASSWORD)

As the seed's mail stack: Postfix hands mail to Dovecot over LMTP, Dovecot stores it in a
Maildir per address (`maildir(address)`) and serves it over IMAP. Every address is a mailbox
(static userdb and passdb: any address logs in with `PASSWORD`), so a campaign to any list
lands somewhere readable. The port is LMTP's; `imap_port` is IMAP's (no TLS: loopback only).

Dovecot's master needs root (its login processes drop to `dovenull`); mail is stored as the
`mail` user, so `base_dir` is made searchable for it, as dev/postfix.py does for Postfix.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from pathlib import Path

from penguinmails.devstack.ports import free_port, is_listening
from penguinmails.devstack.process import PrivateService, find_binary

PASSWORD = "penguinmails"  # noqa: S105 - the local demo mailboxes' shared password, on loopback
MAIL_USER = "mail"


class DovecotError(RuntimeError):
    """The local Dovecot could not be started or stopped."""


class DovecotServer(PrivateService):
    display_name = "dovecot"
    error = DovecotError
    bind_failure = re.compile(r"Address already in use")
    stop_timeout = 15.0
    poll_interval = 0.05

    def __init__(self, base_dir: Path, *, start_timeout: float = 30.0) -> None:
        self.base_dir = Path(base_dir).absolute()
        root = self.base_dir / "dovecot"
        super().__init__(root, root / "dovecot.log", start_timeout=start_timeout)
        self.mail_dir = self.root / "mail"
        self.imap_port = 0
        self._binary = find_binary(
            "dovecot", env=None, install="Debian: apt-get install dovecot-imapd dovecot-lmtpd",
            error=DovecotError,
        )  # fmt: skip

    def maildir(self, address: str) -> Path:
        """Where the mail of `address` is stored (new/ and cur/ hold the messages)."""
        local, _, domain = address.lower().partition("@")
        return self.mail_dir / domain / local / "Maildir"

    def _prepare(self) -> None:
        if os.geteuid() != 0:
            raise DovecotError("Dovecot must be started as root (its processes drop privileges)")
        user = pwd.getpwnam(MAIL_USER)
        for path in (self.root, self.root / "run", self.mail_dir):
            path.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail_dir, user.pw_uid, user.pw_gid)
        directory = self.root
        while True:  # the mail user must reach its directory
            mode = directory.stat().st_mode
            if not mode & stat.S_IXOTH:
                directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            if directory == self.base_dir or directory.parent == directory:
                break
            directory = directory.parent

    def _command(self, port: int) -> list[str]:
        self.imap_port = free_port()
        user = pwd.getpwnam(MAIL_USER)
        config = f"""# A private instance: nothing of /etc/dovecot is read.
base_dir = {self.root / "run"}
state_dir = {self.root / "state"}
log_path = {self.log_path}
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = {user.pw_uid}
last_valid_uid = {user.pw_uid}
mail_location = maildir:{self.mail_dir}/%d/%n/Maildir
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={user.pw_uid} gid={user.pw_gid} home={self.mail_dir}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
protocol lmtp {{
  # Deliver to the full address's mailbox (user@domain), as MailU does.
  auth_username_format = %Lu
}}
"""
        path = self.root / "dovecot.conf"
        path.write_text(config)
        return [self._binary, "-F", "-c", str(path)]

    def _ready(self) -> bool:
        return is_listening(self.port) and is_listening(self.imap_port)
