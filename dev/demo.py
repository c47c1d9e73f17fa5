"""A campaign delivered through pods on the local node: what `make run` shows and
tests/integration/test_node_delivery.py proves, set up one way for both.

`Delivery(base_dir, node, ...)` starts, on loopback and exposed to pods on the node's bridge:
Knot with the demo zone (its nameserver is the bridge address, where the operator's pod asks),
Dovecot with a mailbox for every address (dev/dovecot.py), the Postfix relay handing mail to it
over LMTP; exposes PostgreSQL and Redis; installs the chart (dev/release.py). Then
`apply_tenant()`, `import_contacts()` and `apply_campaign()` do what a tenant would: a Tenant, a
contact list through the CLI, the TSIG Secret, an SmtpServer (the relay), a SendingDomain
published to Knot and a Campaign.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from penguinmails.devstack.dnszones import minimal_zone
from penguinmails.devstack.dovecot import DovecotServer
from penguinmails.devstack.knot import KnotServer
from penguinmails.devstack.node import Node
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.process import Startable
from penguinmails.devstack.release import LocalRelease, merge_values, pod_url

GROUP, VERSION = "penguinmails.io", "v1alpha1"
ZONE = "adelie.test"
"""The sending domain the demo tenant publishes (a local zone: nothing leaves the machine)."""
RECIPIENT_DOMAIN = "dest.test"
CAMPAIGN = "hello"
SUPPRESSION_KEY = "local-demo-platform-key"  # a local stack's key, never a production one


def _port(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    if port is None:
        raise ValueError(f"{url!r} has no port")
    return port


@dataclass
class Delivery(Startable):
    """See the module docstring. `operator_env` and `values` tune the installed chart."""

    base_dir: Path
    node: Node
    kubeconfig: Path
    database_url: str
    redis_url: str
    namespace: str = "penguinmails-system"
    operator_env: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    dns_ttl: int = 1
    knot: KnotServer = field(init=False)
    mailboxes: DovecotServer = field(init=False)
    relay: PostfixServer = field(init=False)
    release: LocalRelease = field(init=False)
    timings: dict[str, float] = field(init=False, default_factory=dict)
    _exit: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    @property
    def gateway(self) -> str:
        if self.node.bridge is None:
            raise RuntimeError("the node is not started")
        return self.node.bridge.gateway

    def start(self) -> Delivery:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        assert self.node.bridge is not None
        began = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # Postfix and Dovecot drop to their users, which must enter their directories: the
        # base and the 0700 temporary directory holding it get o+x (enter, not list).
        for directory in (self.base_dir, self.base_dir.parent):
            mode = directory.stat().st_mode
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        zone = minimal_zone(ZONE, address=self.gateway, ttl=self.dns_ttl)
        self.knot = self._exit.enter_context(KnotServer(self.base_dir / "dns", zones={ZONE: zone}))
        self.mailboxes = self._exit.enter_context(DovecotServer(self.base_dir))
        self.relay = self._exit.enter_context(
            PostfixServer(
                self.base_dir,
                name="relay",
                hostname=f"relay.{ZONE}",
                # The relay is also the mail server's MTA: it hands everything to Dovecot.
                settings={"default_transport": f"lmtp:[127.0.0.1]:{self.mailboxes.port}"},
            )
        )
        for port in (
            self.knot.port,
            self.relay.port,
            _port(self.database_url),
            _port(self.redis_url),
        ):
            self.node.expose(port)
        self.node.expose(self.knot.port, udp=True)
        self.timings["dns, mailboxes and relay"] = time.monotonic() - began
        self.release = LocalRelease(
            self.base_dir / "release",
            self.kubeconfig,
            self.namespace,
            database_url=pod_url(self.database_url, self.gateway),
            redis_url=pod_url(self.redis_url, self.gateway),
            suppression_key=SUPPRESSION_KEY,
            egress_allow=[self.node.bridge.subnet],
            env={
                "PM_DNS_NAMESERVER_PORT": str(self.knot.port),
                "PM_DNS_TTL_SECONDS": str(self.dns_ttl),
                "PM_DNS_TICK_SECONDS": "1",
                "PM_DNS_TIMEOUT_SECONDS": "2",
                **self.operator_env,
            },
            values=merge_values(
                {
                    "smtpServers": {
                        # No blocklist probes of a local relay.
                        "probes": {
                            "intervalSeconds": 0,
                            "resolver": f"{self.gateway}:{self.knot.port}",
                        }
                    }
                },
                self.values,
            ),
        )
        self._exit.enter_context(self.release)
        self.timings["chart installed, operator Ready"] = self.release.installed_in

    def stop(self) -> None:
        self._exit.close()

    # -- what a tenant does ------------------------------------------------------------------

    def apply_tenant(self, api: client.ApiClient, name: str) -> str:
        """The Tenant, its namespace once the operator made it Ready (quotas counted), and the
        TSIG Secret there."""
        custom = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)
        custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "tenants",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Tenant",
                "metadata": {"name": name},
                "spec": {
                    "tier": "professional",
                    "contactEmail": f"ops@{ZONE}",
                    "postalAddress": {
                        "street": "1 Penguin Way",
                        "city": "Iceberg",
                        "country": "AQ",
                    },
                },
            },
        )
        namespace = f"tenant-{name}"

        def ready() -> bool:
            tenant = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
            conditions = (tenant.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        def quotas_counted() -> bool:
            # Until the quota controller counted a new quota, the API server refuses every
            # object the quota covers ("status unknown for quota").
            quotas = core.list_namespaced_resource_quota(namespace).items
            return bool(quotas) and all(
                q.status and q.status.hard and set(q.status.hard) <= set(q.status.used or {})
                for q in quotas
            )

        _wait(ready, f"Tenant {name} Ready")
        _wait(quotas_counted, f"the quotas of {namespace} counted")
        core.create_namespaced_secret(
            namespace,
            {"metadata": {"name": "tsig"}, "stringData": {"secret": self.knot.tsig.secret}},
        )
        return namespace

    def import_contacts(self, tenant: str, csv: Path) -> subprocess.CompletedProcess[str]:
        """`penguinmails-api import-contacts` (the platform's own import) into list `leads`, once
        the tenant's row exists."""
        env = {
            **os.environ,
            "PM_DATABASE_URL": self.database_url,
            "PM_SUPPRESSION_KEY": SUPPRESSION_KEY,
        }

        def attempt() -> subprocess.CompletedProcess[str] | None:
            result = subprocess.run(
                [
                    *(sys.executable, "-m", "penguinmails.api.http", "import-contacts"),
                    *("--tenant", tenant, "--list", "leads", str(csv)),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            return result if result.returncode != 1 else None  # 1: no tenant row yet

        found: subprocess.CompletedProcess[str] = _wait(attempt, "the tenant row")
        return found

    def campaign_documents(self, per_hour: int | None = None) -> list[dict[str, Any]]:
        """SmtpServer `relay`, SendingDomain `adelie` (published to Knot), Campaign `hello`
        (`per_hour` spreads its sends: one every 3600/per_hour seconds)."""
        throttle: dict[str, int] = {"perMailboxPerDay": 10000}
        if per_hour is not None:
            throttle["perHour"] = per_hour
        documents: list[dict[str, Any]] = [
            {
                "kind": "SmtpServer",
                "metadata": {"name": "relay"},
                "spec": {
                    "hostname": f"relay.{ZONE}",
                    "provider": {
                        "relay": {"host": self.gateway, "port": self.relay.port, "tls": "none"}
                    },
                },
            },
            {
                "kind": "SendingDomain",
                "metadata": {"name": "adelie"},
                "spec": {
                    "domain": ZONE,
                    "dnsProvider": self.knot.rfc2136_provider("tsig", server=self.gateway),
                    "smtpServerRefs": [{"name": "relay"}],
                    "mx": {"enabled": False},
                    "dmarc": {"policy": "none"},
                    "verifyInterval": "2s",
                },
            },
            {
                "kind": "Campaign",
                "metadata": {"name": CAMPAIGN},
                "spec": {
                    "sendingDomainRef": {"name": "adelie"},
                    "from": {"address": f"jane@{ZONE}", "name": "Jane"},
                    "subject": "Hello {{ first_name }}",
                    "text": "Hi {{ first_name }}, a short note from your local PenguinMails.",
                    "audience": {"lists": ["leads"]},
                    "throttle": throttle,
                },
            },
        ]
        return [{"apiVersion": f"{GROUP}/{VERSION}", **d} for d in documents]

    def apply_campaign(
        self, api: client.ApiClient, namespace: str, per_hour: int | None = None
    ) -> None:
        custom = client.CustomObjectsApi(api)
        plurals = {"SmtpServer": "smtpservers", "SendingDomain": "sendingdomains"}
        for document in self.campaign_documents(per_hour):
            plural = plurals.get(document["kind"], "campaigns")
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, document)


def contacts_csv(path: Path, count: int, local_prefix: str = "r") -> Path:
    """`count` contacts `<local_prefix><i>@dest.test`, first name R<i>."""
    rows = [
        "email,first_name",
        *(f"{local_prefix}{i}@{RECIPIENT_DOMAIN},R{i}" for i in range(count)),
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
