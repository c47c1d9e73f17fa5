"""Acceptance: a Campaign on the real control plane, end to end.

The operator process (every controller), PostgreSQL, Redis, Knot DNS (the SendingDomain's
records and DKIM keys, verified by its controller), Postfix as the relay an external SmtpServer
points at, recipient servers on loopback, and the real sender program reading its DKIM keys from
the Secret through the API. Contacts come in through the `penguinmails contacts import` CLI.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import email
import json
import logging
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import dkim
import dns.flags
import dns.message
import dns.query
import pytest
from aiosmtpd.controller import Controller
from kubernetes import client

from penguinmails.common.keys import MasterKeys
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.intake import IntakeHandler, IntakeResult
from tests.integration.conftest import (
    GROUP,
    VERSION,
    Cluster,
    OperatorFactory,
    OperatorProcess,
    wait_for,
)

pytestmark = pytest.mark.integration

ZONE = "campaign.test"
KEY = "e2e-campaign-platform-key"


def tenant_id(dsn: str, name: str) -> uuid.UUID:
    async def fetch() -> uuid.UUID:
        conn = await asyncpg.connect(dsn)
        try:
            return uuid.UUID(
                str(await conn.fetchval("SELECT id FROM tenants WHERE name = $1", name))
            )
        finally:
            await conn.close()

    return asyncio.run(fetch())


CONTACTS = 200


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    with KnotServer(tmp_path_factory.mktemp("knot"), zones={ZONE: minimal_zone(ZONE)}) as server:
        yield server


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, knot: KnotServer) -> Iterator[OperatorProcess]:
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS="2",
        PM_SMTP_PROBE_SECONDS="0",
        PM_UNSUBSCRIBE_URL="https://unsubscribe.campaign.test/u",
    )
    yield handle
    handle.stop()
    log = handle.log()
    assert "Traceback" not in log and "Unhandled" not in log, log[-4000:]


@pytest.fixture()
def tenants(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi
) -> Iterator[list[str]]:
    """Tenants the test creates; deleted with everything in them while this module's operator
    and DNS server still run, so their finalizers complete and nothing is left for the operators
    of later modules to resume."""
    names: list[str] = []
    yield names

    def gone(namespace: str, plural: str) -> bool:
        items = custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        return not items["items"]

    def tenant_gone(name: str) -> bool:
        items = custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")["items"]
        return all(t["metadata"]["name"] != name for t in items)

    kinds = ("campaigns", "sendingdomains", "smtpservers")
    for name in names:
        namespace = f"tenant-{name}"
        for plural in kinds:
            custom_objects.delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, plural
            )
        for plural in kinds:
            wait_for(partial(gone, namespace, plural), timeout=60, what=f"{plural} deleted")
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        wait_for(partial(tenant_gone, name), timeout=60, what=f"Tenant {name} deleted")


def txt_lookup(knot: KnotServer) -> Any:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        query = dns.message.make_query(name.decode(), "TXT")
        query.flags &= ~dns.flags.RD
        response = dns.query.udp(query, knot.address, port=knot.port, timeout=2)
        values = [b"".join(r.strings) for rrset in response.answer for r in rrset]
        return values[0] if values else b""

    return lookup


def phase(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    return dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, "campaigns", "hello"))


def test_campaign_from_apply_to_inbox(
    operator: OperatorProcess,
    tenants: list[str],
    knot: KnotServer,
    cluster: Cluster,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    postgres_dsn: str,
    redis_url: str,
    services_dir: Path,
    tmp_path: Path,
) -> None:
    name = f"acme-{secrets.token_hex(3)}"
    namespace = f"tenant-{name}"
    tenants.append(name)
    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {
                "tier": "professional",
                "contactEmail": "ops@campaign.test",
                "postalAddress": {"street": "1 Penguin Way", "city": "Iceberg", "country": "AQ"},
            },
        },
    )
    wait_for(
        lambda: core.list_namespace(field_selector=f"metadata.name={namespace}").items,
        timeout=60,
        what="the tenant namespace",
    )

    # Contacts by the platform's import: 200 good rows, one malformed, one duplicate, reported.
    csv = tmp_path / "contacts.csv"
    rows = ["email,first_name", *(f"r{i}@dest.test,R{i}" for i in range(CONTACTS))]
    rows += ["not-an-address,X", "r1@dest.test,Dup"]
    csv.write_text("\n".join(rows) + "\n")
    env = {**os.environ, "PM_DATABASE_URL": postgres_dsn, "PM_SUPPRESSION_KEY": KEY}

    def run_import() -> subprocess.CompletedProcess[str] | None:
        result = subprocess.run(
            [
                *(sys.executable, "-m", "penguinmails.api.http", "import-contacts"),
                *("--tenant", name, "--list", "leads", str(csv)),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        return result if result.returncode != 1 else None  # 1: the tenant row is not there yet

    imported = wait_for(run_import, timeout=60, what="the tenant row for the import")
    assert imported.returncode == 2, imported.stderr
    assert "imported 200 contacts" in imported.stdout
    assert "line 202: malformed address" in imported.stderr
    assert "line 203: duplicate of line 3" in imported.stderr
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "tsig"},
            "data": {"secret": base64.b64encode(knot.tsig.secret.encode()).decode()},
        },
    )

    intake = IntakeHandler(postgres_dsn, MasterKeys.parse(KEY))
    intake_server = Controller(intake, hostname="127.0.0.1", port=free_port())
    intake_server.start()
    # What the intake logs (it runs in this process), for the secrets scan at the end.
    intake_log = _Records()
    logging.getLogger("penguinmails.sender.intake").addHandler(intake_log)
    with (
        SinkServer() as recipients,
        PostfixServer(
            services_dir,
            relayhost=recipients.address,
            routes={ZONE: f"127.0.0.1:{intake_server.port}"},
            name="postfix-e2e",
        ) as relay,
    ):
        recipients.reply_for["r7@dest.test"] = (550, "5.1.1 <r7@dest.test>: no such user")
        recipients.set_reply_once("r9@dest.test", 451, "4.7.1 greylisted")
        for plural, body in (
            (
                "smtpservers",
                {
                    "metadata": {"name": "relay"},
                    "spec": {
                        "hostname": "relay.campaign.test",
                        "provider": {
                            "relay": {"host": "127.0.0.1", "port": relay.port, "tls": "none"}
                        },
                    },
                },
            ),
            (
                "sendingdomains",
                {
                    "metadata": {"name": "acme"},
                    "spec": {
                        "domain": ZONE,
                        "dnsProvider": knot.rfc2136_provider(),
                        "smtpServerRefs": [{"name": "relay"}],
                        "mx": {"enabled": False},
                        "dmarc": {"policy": "none"},
                        "verifyInterval": "2s",
                    },
                },
            ),
            (
                "campaigns",
                {
                    "metadata": {"name": "hello"},
                    "spec": {
                        "sendingDomainRef": {"name": "acme"},
                        "from": {"address": f"jane@{ZONE}", "name": "Jane"},
                        "subject": "Hello {{ first_name }}",
                        "text": "Hi {{ first_name }}, a short note.",
                        "audience": {"lists": ["leads"]},
                        "throttle": {"perMailboxPerDay": 10000},
                    },
                },
            ),
        ):
            kind = {"smtpservers": "SmtpServer", "sendingdomains": "SendingDomain"}.get(
                plural, "Campaign"
            )
            custom_objects.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                plural,
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, **body},
            )

        # Preflight holds the campaign until the domain is verified, then it sends.
        sending = wait_for(
            lambda: (
                phase(custom_objects, namespace)
                if (phase(custom_objects, namespace).get("status") or {}).get("phase") == "Sending"
                else None
            ),
            timeout=120,
            what="the campaign to pass preflight and start sending",
        )
        assert sending["status"]["counts"]["total"] == CONTACTS
        # The Tenant controller scales the sender up for it.
        wait_for(
            lambda: (
                apps.read_namespaced_deployment("penguinmails-sender", namespace).spec.replicas == 1
            ),
            timeout=60,
            what="the sender Deployment scaled to 1",
        )

        sender_log = tmp_path / "sender.log"
        sender = subprocess.Popen(
            [sys.executable, "-m", "penguinmails.sender"],
            env={
                **env,
                "PM_TENANT": name,
                "PM_TOKEN_KEY": MasterKeys.parse(KEY)
                .token_key(tenant_id(postgres_dsn, name))
                .encode(),
                "PM_REDIS_URL": redis_url,
                "KUBECONFIG": str(cluster.kubeconfig),
                "PM_METRICS_PORT": "0",
                "PM_POLL_SECONDS": "0.2",
            },
            stderr=sender_log.open("wb"),
        )
        try:
            done = wait_for(
                lambda: (
                    phase(custom_objects, namespace)
                    if (phase(custom_objects, namespace).get("status") or {}).get("phase")
                    == "Completed"
                    else None
                ),
                timeout=180,
                what="the campaign to complete",
            )
            wait_for(
                lambda: relay.queue_size() == 0 and len(recipients.messages) >= CONTACTS - 1,
                timeout=60,
                what="Postfix to deliver everything",
            )
        finally:
            sender.terminate()
            sender.wait(30)
        assert sender.returncode == 0, sender_log.read_text()[-3000:]

        received = collections.Counter(r for m in recipients.messages for r in m.rcpt_tos)
        expected = {f"r{i}@dest.test" for i in range(CONTACTS)} - {"r7@dest.test"}
        assert set(received) == expected and max(received.values()) == 1
        assert done["status"]["progress"] == 100
        # The 550 came back as a DSN to the return-path; intake bounced and suppressed it, and
        # the status counts end equal to what arrived.
        wait_for(
            lambda: intake.results.count(IntakeResult.BOUNCED) == 1,
            timeout=30,
            what="the bounce at the intake",
        )
        counts = wait_for(
            lambda: (
                (c := phase(custom_objects, namespace)["status"]["counts"])["bounced"] == 1 and c
            ),
            timeout=30,
            what="status counts with the bounce",
        )
        assert counts["sent"] == len(received) == CONTACTS - 1
        assert counts["total"] == CONTACTS
        lookup = txt_lookup(knot)
        for message in recipients.messages:
            verifier = dkim.DKIM(message.data)
            assert verifier.verify(idx=0, dnsfunc=lookup), message.data[:600]
            parsed = email.message_from_bytes(message.data)
            assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # No campaign sending any more: the sender scales back to zero.
        wait_for(
            lambda: (
                apps.read_namespaced_deployment("penguinmails-sender", namespace).spec.replicas == 0
            ),
            timeout=60,
            what="the sender Deployment scaled back to 0",
        )
    intake_server.stop()
    logging.getLogger("penguinmails.sender.intake").removeHandler(intake_log)

    # Secrets scan (issue 9): no password, key or token used in this run appears in the
    # sender's, the intake's or the operator's logs, the CLI's output, any event of the
    # tenant's namespace or any status of its objects.
    secret_values = _run_secrets(
        core,
        namespace,
        KEY,
        postgres_dsn,
        redis_url,
        knot.tsig.secret,
        tenant_id(postgres_dsn, name),
    )
    corpus = {
        "sender log": sender_log.read_text(errors="replace"),
        "intake log": "\n".join(intake_log.lines),
        "operator log": operator.log(),
        "contacts import": imported.stdout + imported.stderr,
        "events": json.dumps(
            [(e.reason, e.message) for e in core.list_namespaced_event(namespace).items]
        ),
        "statuses": json.dumps(
            [
                custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name).get(
                    "status"
                ),
                *(
                    item.get("status")
                    for plural in ("smtpservers", "sendingdomains", "campaigns")
                    for item in custom_objects.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, plural
                    )["items"]
                ),
                done.get("status"),
            ]
        ),
    }
    assert corpus["sender log"] and corpus["operator log"] and corpus["events"] != "[]"
    leaks = [
        (label, where)
        for label, value in secret_values.items()
        for where, text in corpus.items()
        if value in text
    ]
    print(
        f"\nsecrets scan: {len(secret_values)} values x {len(corpus)} sources "
        f"({sum(len(t) for t in corpus.values())} characters): {leaks or 'none found'}"
    )
    assert not leaks

    # A Campaign carries the finalizer that closes its gate when it is deleted (the gate
    # itself is tested in test_campaign_controller.py); deletion completes.
    assert "penguinmails.io/cleanup" in done["metadata"].get("finalizers", [])
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "campaigns", "hello")
    wait_for(
        lambda: (
            not custom_objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns"
            )["items"]
        ),
        timeout=60,
        what="the Campaign deleted",
    )


class _Records(logging.Handler):
    """Keeps every formatted log line of the loggers it is added to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _run_secrets(
    core: client.CoreV1Api,
    namespace: str,
    master: str,
    postgres_dsn: str,
    redis_url: str,
    tsig: str,
    tenant: uuid.UUID,
) -> dict[str, str]:
    """Every secret value this run used, by name: the platform master key and the tenant's
    derived token key, the database and Redis passwords, the TSIG secret, and each line of
    the DKIM private keys the operator generated (read from their Secret)."""
    found = {
        "master key": master,
        "token key": MasterKeys.parse(master).token_key(tenant).encode(),
        "tsig secret": tsig,
    }
    for label, url in (("database password", postgres_dsn), ("redis password", redis_url)):
        password = urlsplit(url).password
        if password:
            found[label] = password
    dkim_secret = core.read_namespaced_secret("acme-dkim", namespace)
    for key, value in (dkim_secret.data or {}).items():
        text = base64.b64decode(value).decode(errors="replace")
        if "PRIVATE KEY" not in text:
            continue
        body = [line for line in text.splitlines() if line and not line.startswith("-----")]
        for index, line in enumerate(body):
            if len(line) >= 16:  # a fragment long enough to be unmistakable
                found[f"DKIM {key} line {index}"] = line
    assert any(label.startswith("DKIM") for label in found), "no DKIM private key found"
    return found
