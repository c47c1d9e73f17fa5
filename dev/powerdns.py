"""A private, throwaway PowerDNS Authoritative server on loopback: sqlite backend, HTTP API on.

    with PowerDnsServer(base_dir, zones={"example.test": minimal_zone("example.test")}) as pdns:
        pdns.address, pdns.port          # DNS on 127.0.0.1:<port> (UDP and TCP)
        pdns.api_url, pdns.api_key       # http://127.0.0.1:<api port>, header X-API-Key
        pdns.server_id                   # "localhost"

Own ports and directory (`base_dir/powerdns/`: pdns.conf, pdns.sqlite3, pdns.log). Zones are
loaded with `pdnsutil load-zone` before the server starts. Binaries are `$PM_PDNS_SERVER` (and
`pdnsutil` next to it) or from PATH (Debian: apt-get install pdns-server pdns-backend-sqlite3).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Mapping
from pathlib import Path

import httpx

from penguinmails.devstack.dnszones import (
    DnsServerError,
    answers_authoritatively,
    minimal_zone,
    normalize_zone,
)
from penguinmails.devstack.ports import free_ports
from penguinmails.devstack.process import PrivateService, find_binary

PDNS_SERVER_ENV = "PM_PDNS_SERVER"
SCHEMA_PATHS = (
    Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"),
    Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
)

_BIND_FAILURE = re.compile(r"Address already in use|Unable to bind")

__all__ = ["DnsServerError", "PowerDnsServer", "find_pdns_server", "minimal_zone"]


def find_pdns_server() -> str:
    """`$PM_PDNS_SERVER`, else `pdns_server` from PATH (or /usr/sbin)."""
    return find_binary(
        "pdns_server",
        env=PDNS_SERVER_ENV,
        install="Debian: apt-get install pdns-server pdns-backend-sqlite3",
        error=DnsServerError,
    )


def _schema() -> str:
    for path in SCHEMA_PATHS:
        if path.is_file():
            return path.read_text()
    raise DnsServerError("PowerDNS sqlite schema not found: apt-get install pdns-backend-sqlite3")


class PowerDnsServer(PrivateService):
    """One private PowerDNS instance; context manager or `start()` / `stop()` (idempotent)."""

    display_name = "pdns_server"
    error = DnsServerError
    bind_failure = _BIND_FAILURE

    def __init__(
        self,
        base_dir: Path,
        zones: Mapping[str, str] | None = None,
        *,
        api_key: str | None = None,
        start_timeout: float = 20.0,
        binary: str | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        root = self.base_dir / "powerdns"
        super().__init__(root, root / "pdns.log", start_timeout=start_timeout)
        self.database_path = self.root / "pdns.sqlite3"
        self.address = self.host
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.server_id = "localhost"
        self._zones = {normalize_zone(name): text for name, text in (zones or {}).items()}
        self._api_port: int | None = None
        self._binary = binary

    @property
    def api_port(self) -> int:
        if self._api_port is None:
            raise DnsServerError("PowerDNS is not started")
        return self._api_port

    @property
    def api_url(self) -> str:
        return f"http://{self.address}:{self.api_port}"

    @property
    def zones(self) -> list[str]:
        return sorted(self._zones)

    def _prepare(self) -> None:
        """Create the database and load the zones into it (first start only)."""
        binary = self._binary = self._binary or find_pdns_server()
        super()._prepare()
        (self.root / "zones").mkdir(exist_ok=True)
        if self.database_path.exists():
            return
        with contextlib.closing(sqlite3.connect(self.database_path)) as db:
            db.executescript(_schema())
        self._write_config()  # pdnsutil reads the backend settings from it
        for name in self._zones:
            self._load_zone(binary, name)

    def _new_port(self) -> int:
        # Two ports, DNS and API; both are fresh when a bind failed, since either may have.
        port, self._api_port = free_ports(2, self.address)
        return port

    def _command(self, port: int) -> list[str]:
        assert self._binary is not None
        self._write_config()
        return [
            self._binary,
            f"--config-dir={self.root}",
            "--daemon=no",
            "--guardian=no",
            "--disable-syslog",
            "--write-pid=no",
        ]

    def _ready(self) -> bool:
        """Every zone answers authoritatively, and so does the API."""
        return (
            all(answers_authoritatively(self.address, self.port, z) for z in self._zones)
            and self._api_ready()
        )

    # -- steps ------------------------------------------------------------------------------

    def _pdnsutil(self, binary: str) -> str:
        sibling = Path(binary).with_name("pdnsutil")
        if sibling.is_file():
            return str(sibling)
        return shutil.which("pdnsutil") or shutil.which("pdnsutil", path="/usr/bin") or "pdnsutil"

    def _load_zone(self, binary: str, zone: str) -> None:
        path = self.root / "zones" / f"{zone}.zone"
        path.write_text(self._zones[zone])
        result = subprocess.run(
            [self._pdnsutil(binary), f"--config-dir={self.root}", "load-zone", zone, str(path)],
            capture_output=True,
            timeout=self.start_timeout,
            check=False,
        )
        if result.returncode != 0:
            raise DnsServerError(
                f"pdnsutil load-zone {zone} failed: {result.stderr.decode(errors='replace')}"
            )

    def _write_config(self) -> None:
        path = self.root / "pdns.conf"
        path.write_text(
            "launch=gsqlite3\n"
            f"gsqlite3-database={self.database_path}\n"
            f"local-address={self.address}\n"
            f"local-port={self._port or 0}\n"
            "api=yes\n"
            f"api-key={self.api_key}\n"
            "webserver=yes\n"
            f"webserver-address={self.address}\n"
            f"webserver-port={self._api_port or 0}\n"
            "webserver-allow-from=127.0.0.0/8\n"
            "default-soa-content=ns1.@ hostmaster.@ 0 10800 3600 604800 60\n"
            "disable-syslog=yes\n"
            "loglevel=4\n"
            f"socket-dir={self.root}\n"
            "distributor-threads=1\n"
            "receiver-threads=1\n"
            # No packet/query cache: tests read their own writes at once.
            "cache-ttl=0\n"
            "negquery-cache-ttl=0\n"
            "query-cache-ttl=0\n"
            "zone-cache-refresh-interval=0\n"
        )
        os.chmod(path, 0o600)  # holds the API key

    def _api_ready(self) -> bool:
        try:
            response = httpx.get(
                f"{self.api_url}/api/v1/servers/{self.server_id}",
                headers={"X-API-Key": self.api_key},
                timeout=0.5,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200
