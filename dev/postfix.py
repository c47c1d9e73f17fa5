"""A private Postfix (Debian) on loopback: the relay the sender talks to, as MailU's smtp would be.

    with PostfixServer(base_dir, relayhost="127.0.0.1:2525") as relay:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port)

    # STARTTLS with a generated self-signed certificate (for probes of the SmtpServer issue):
    with PostfixServer(base_dir, tls=True) as relay:
        relay.tls_cert   # PEM path of the certificate it presents

Multiple-instance style: its own `main.cf`/`master.cf` in `base_dir/postfix/conf`, its own queue
and data directories, started with `postfix -c CONF start-fg` (the master stays in the foreground,
so it is stopped like any child process). Only an smtpd on `127.0.0.1:PORT` listens; it accepts
mail from loopback only (`mynetworks`), never delivers locally, and relays everything to
`relayhost` or, per recipient domain, to the `routes` given (domain → "host:port"). Retries are
fast (1 s backoff) so a 4xx from a recipient server is retried within seconds, not minutes.

Postfix needs root to start (its daemons drop to the `postfix` user); `base_dir` is made
searchable (o+x) for that user, like dev/postgres.py does for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pwd
import re
import signal
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

from penguinmails.devstack.ports import is_listening
from penguinmails.devstack.process import PrivateService, find_binary, stop_process

POSTFIX_USER = "postfix"
DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"


class PostfixError(RuntimeError):
    """The local Postfix could not be started or stopped."""


_MASTER_CF = """\
{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def find_postfix() -> str:
    return find_binary(
        "postfix", env=None, install="Debian: apt-get install postfix", error=PostfixError
    )


def generate_certificate(directory: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate and key for `hostname` (PEM files in `directory`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class PostfixServer(PrivateService):
    """One private Postfix instance; context manager or `start()` / `stop()` (idempotent)."""

    display_name = "postfix"
    error = PostfixError
    # master(8) logs "bind 127.0.0.1 port N: Address already in use" and exits.
    bind_failure = re.compile(r"Address already in use")
    stop_timeout = 15.0
    poll_interval = 0.05

    def __init__(
        self,
        base_dir: Path,
        *,
        relayhost: str | None = None,
        routes: Mapping[str, str] | None = None,
        tls: bool = False,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        hostname: str = "relay.penguinmails.test",
        settings: Mapping[str, str] | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
        name: str = "postfix",
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        root = self.base_dir / name
        super().__init__(root, root / "postfix.log", port=port, start_timeout=start_timeout)
        self.conf_dir = self.root / "conf"
        self.queue_dir = self.root / "queue"
        self.data_dir = self.root / "data"
        self.hostname = hostname
        self.relayhost = relayhost
        self.routes = dict(routes or {})
        self.tls = tls or tls_cert is not None
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self._settings = dict(settings or {})
        self._postfix: str | None = None

    def main_cf(self) -> dict[str, str]:
        """The instance's main.cf settings (see the module docstring for why each is there)."""
        conf: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "daemon_directory": DAEMON_DIRECTORY,
            "mail_owner": POSTFIX_USER,
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": "penguinmails.test",
            "myorigin": "$myhostname",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "relayhost": f"[{_host(self.relayhost)}]:{_port(self.relayhost)}"
            if self.relayhost
            else "",
            # Never look anything up in the machine's DNS: next hops are given explicitly.
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "smtpd_peername_lookup": "no",
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.root),
            "biff": "no",
            "append_dot_mydomain": "no",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
            "bounce_queue_lifetime": "1h",
            "maximal_queue_lifetime": "1h",
            "delay_warning_time": "0",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "message_size_limit": "52428800",
            "smtpd_banner": "$myhostname ESMTP",
            # Fewer idle processes: the machine is shared.
            "default_process_limit": "20",
        }
        if self.routes:
            conf["transport_maps"] = f"inline:{{{self._transport_entries()}}}"
            conf["relay_domains"] = ", ".join(sorted(self.routes))
        if self.tls:
            assert self.tls_cert is not None and self.tls_key is not None
            conf |= {
                "smtpd_tls_security_level": "may",
                "smtpd_tls_chain_files": f"{self.tls_key}, {self.tls_cert}",
                "smtpd_tls_loglevel": "1",
            }
        return conf | self._settings

    def _transport_entries(self) -> str:
        return ", ".join(
            f"{domain}=smtp:[{_host(target)}]:{_port(target)}"
            for domain, target in sorted(self.routes.items())
        )

    @property
    def _output_path(self) -> Path:
        # The master's own output; the daemons log to `log_path` (maillog_file).
        return self.root / "master.out"

    def _prepare(self) -> None:
        self._postfix = find_postfix()
        if os.geteuid() != 0:
            raise PostfixError("Postfix must be started as root (its daemons drop privileges)")
        for path in (self.root, self.conf_dir, self.data_dir, self.queue_dir):
            path.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam(POSTFIX_USER)
        os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        # The postfix user must be able to reach the queue and data directories.
        directory = self.root
        while True:
            mode = directory.stat().st_mode
            if not mode & stat.S_IXOTH:
                directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            if directory == self.base_dir or directory.parent == directory:
                break
            directory = directory.parent
        if self.tls and self.tls_cert is None:
            self.tls_cert, self.tls_key = generate_certificate(self.conf_dir, self.hostname)
        if self.tls and self.tls_key is None:
            raise PostfixError("tls_cert given without tls_key")

    def _command(self, port: int) -> list[str]:
        """Write main.cf and master.cf for `port`, have `postfix check` vet them."""
        assert self._postfix is not None
        (self.conf_dir / "main.cf").write_text(
            "".join(f"{key} = {value}\n" for key, value in self.main_cf().items())
        )
        (self.conf_dir / "master.cf").write_text(_MASTER_CF.format(port=f"{self.host}:{port}"))
        check = subprocess.run(
            [self._postfix, "-c", str(self.conf_dir), "check"], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise PostfixError(f"postfix check failed: {check.stderr.strip()}")
        # start-fg: the master stays in the foreground, our child, stopped like any other.
        return [self._postfix, "-c", str(self.conf_dir), "start-fg"]

    def _ready(self) -> bool:
        return is_listening(self.port, self.host)

    def log_tail(self, lines: int = 30) -> str:
        """The master's output and the daemons' log, together."""
        texts = []
        for path in (self.root / "master.out", self.log_path):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace"))
        return "\n".join("\n".join(texts).splitlines()[-lines:]) or "(no log)"

    def queue_size(self) -> int:
        """Messages still in Postfix's queues (incoming, active, deferred)."""
        count = 0
        for sub in ("incoming", "active", "deferred", "maildrop", "hold"):
            for _, _, files in os.walk(self.queue_dir / sub):
                count += len(files)
        return count

    def flush(self) -> None:
        """Retry the deferred queue now (`postqueue -f`)."""
        subprocess.run(["postqueue", "-c", str(self.conf_dir), "-f"], capture_output=True)

    def _terminate(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        """`postfix stop` (the master stops its daemons), then SIGKILL the group if stuck."""
        # A `postfix stop` that fails or hangs still ends in the SIGKILL below.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [self._postfix or "postfix", "-c", str(self.conf_dir), "stop"],
                capture_output=True,
                timeout=timeout,
            )
        if not stop_process(process, ((None, None), (signal.SIGKILL, 5.0)), timeout):
            raise PostfixError(f"postfix (pid {process.pid}) did not exit")


def _host(target: str | None) -> str:
    assert target is not None
    return target.rpartition(":")[0] or target


def _port(target: str | None) -> str:
    assert target is not None
    return target.rpartition(":")[2] if ":" in target else "25"
