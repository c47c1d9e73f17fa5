"""A private, throwaway Knot DNS authoritative server on loopback, accepting TSIG-signed updates.

    zones = {"example.test": minimal_zone("example.test")}
    with KnotServer(base_dir, zones=zones) as knot:
        knot.address, knot.port          # 127.0.0.1, a free high port (UDP and TCP)
        knot.tsig                        # TsigKey allowed to send RFC 2136 updates to every zone
        knot.add_zone("other.test", minimal_zone("other.test"))   # config rewrite + reload
        knot.rfc2136_provider("tsig")    # a SendingDomain's dnsProvider publishing to it

Own port and directory (`base_dir/knot/`: knot.conf, zone files, journal, knot.log). Updates
signed with `tsig` are accepted for every zone; unsigned or wrongly signed ones are refused
(NOTAUTH). Changes live in the journal (`zonefile-sync: -1`), so the zone files stay as written.
The binary is `$PM_KNOTD` or `knotd` from PATH (Debian: apt-get install knot). Knot runs as
whoever we are.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from penguinmails.devstack.dnszones import (
    DnsServerError,
    TsigKey,
    answers_authoritatively,
    minimal_zone,
    normalize_zone,
    wait_authoritative,
)
from penguinmails.devstack.process import PrivateService, find_binary

KNOTD_ENV = "PM_KNOTD"

_BIND_FAILURE = re.compile(r"Address already in use|failed to bind")

__all__ = ["DnsServerError", "KnotServer", "TsigKey", "find_knotd", "minimal_zone"]


def find_knotd() -> str:
    """`$PM_KNOTD`, else `knotd` from PATH (or /usr/sbin)."""
    return find_binary(
        "knotd", env=KNOTD_ENV, install="Debian: apt-get install knot", error=DnsServerError
    )


class KnotServer(PrivateService):
    """One private Knot instance; context manager or `start()` / `stop()` (idempotent)."""

    display_name = "knotd"
    error = DnsServerError
    bind_failure = _BIND_FAILURE

    def __init__(
        self,
        base_dir: Path,
        zones: Mapping[str, str] | None = None,
        *,
        tsig: TsigKey | None = None,
        port: int | None = None,
        start_timeout: float = 20.0,
        binary: str | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        root = self.base_dir / "knot"
        super().__init__(root, root / "knot.log", port=port, start_timeout=start_timeout)
        self.config_path = self.root / "knot.conf"
        self.address = self.host
        self.tsig = tsig or TsigKey.generate()
        self._zones = {normalize_zone(name): text for name, text in (zones or {}).items()}
        self._binary = binary

    @property
    def zones(self) -> list[str]:
        return sorted(self._zones)

    def _prepare(self) -> None:
        """Write the zone files (the config names the port, so it is written per attempt)."""
        self._binary = self._binary or find_knotd()
        (self.root / "zones").mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(exist_ok=True)
        (self.root / "db").mkdir(exist_ok=True)
        for name, text in self._zones.items():
            self._zone_file(name).write_text(text)

    def _command(self, port: int) -> list[str]:
        assert self._binary is not None
        self._write_config()
        return [self._binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        """Every zone answers authoritatively."""
        return all(answers_authoritatively(self.address, self.port, z) for z in self._zones)

    def add_zone(self, name: str, text: str) -> None:
        """Serve one more zone (or replace a zone's file) on the running server."""
        zone = normalize_zone(name)
        self._zones[zone] = text
        if not self.running:
            return
        self._zone_file(zone).write_text(text)
        self._write_config()
        result = subprocess.run(
            [self._knotc(), "-c", str(self.config_path), "reload"],
            capture_output=True,
            timeout=self.start_timeout,
            check=False,
        )
        if result.returncode != 0:
            raise DnsServerError(f"knotc reload failed: {result.stderr.decode(errors='replace')}")
        wait_authoritative(self.address, self.port, [zone], self.start_timeout, self.running_check)

    # -- steps ------------------------------------------------------------------------------

    def rfc2136_provider(self, ref: str = "tsig", *, server: str | None = None) -> dict[str, Any]:
        """A SendingDomain's `dnsProvider` publishing here by RFC 2136, with the TSIG key in the
        Secret `ref` (key `secret`) of the domain's namespace; `server` is the address the
        operator reaches this server at, when not `address` (e.g. from a pod, the node's bridge)."""
        return {
            "type": "rfc2136",
            "rfc2136": {
                "server": server or self.address,
                "port": self.port,
                "tsigKeyName": self.tsig.name,
            },
            "credentialsSecretRef": {"name": ref, "key": "secret"},
        }

    def _zone_file(self, zone: str) -> Path:
        return self.root / "zones" / f"{zone}.zone"

    def _knotc(self) -> str:
        knotd = self._binary or find_knotd()
        sibling = Path(knotd).with_name("knotc")
        return str(sibling) if sibling.is_file() else "knotc"

    def _write_config(self) -> None:
        key = self.tsig
        zones = "".join(f"  - domain: {name}\n    acl: pm_update\n" for name in sorted(self._zones))
        # Knot's config is YAML-like; every value we write is a name, number or base64 secret.
        self.config_path.write_text(
            "server:\n"
            f"  rundir: {self.root / 'run'}\n"
            f"  listen: {self.address}@{self.port}\n"
            "  udp-workers: 2\n"
            "  tcp-workers: 2\n"
            "  background-workers: 1\n"
            "log:\n"
            "  - target: stderr\n"
            "    any: info\n"
            "database:\n"
            f"  storage: {self.root / 'db'}\n"
            "key:\n"
            f"  - id: {key.name}\n"
            f"    algorithm: {key.algorithm}\n"
            f"    secret: {key.secret}\n"
            "acl:\n"
            "  - id: pm_update\n"
            f"    key: {key.name}\n"
            "    action: update\n"
            "template:\n"
            "  - id: default\n"
            f"    storage: {self.root / 'zones'}\n"
            '    file: "%s.zone"\n'
            "    zonefile-sync: -1\n"
            "    zonefile-load: difference-no-serial\n"
            "    journal-content: all\n"
            "    semantic-checks: off\n" + (f"zone:\n{zones}" if zones else "")
        )
        os.chmod(self.config_path, 0o600)  # holds the TSIG secret
