"""The Campaign controller on the real API server and PostgreSQL, with the real sender.

The reconcile function runs in the test process (no operator process: the SendingDomain and
SmtpServer controllers would otherwise re-judge the statuses this test sets on purpose), on
objects stored in the real API server; its status patch is written back through the status
subresource as kopf would. The sender sends to a recipient sink on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import kopf
import pytest
import pytest_asyncio
from kopf._core.engines import posting
from kubernetes import client

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context as AuditContext
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.keys import MasterKeys
from penguinmails.common.settings import OperatorSettings
from penguinmails.common.webhooks import EventType, create_endpoint
from penguinmails.devstack.sink import SinkServer
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.campaign import (
    ACTIVE_ANNOTATION,
    CampaignController,
    CampaignSettings,
    cleanup,
)
from penguinmails.operator.context import Context
from penguinmails.operator.inuse import label_key
from penguinmails.operator.kube import Kube
from penguinmails.sender.engine import Sender, SenderConfig
from penguinmails.sender.secrets import DirSecrets
from tests.integration.conftest import GROUP, VERSION

pytestmark = pytest.mark.integration

KEY = b"controller-test-key"
log = logging.getLogger(__name__)


def conditions_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def status_conditions(**types: str) -> list[dict[str, str]]:
    return [
        {
            "type": t,
            "status": s,
            "reason": "Test",
            "message": "set by the test",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        for t, s in types.items()
    ]


class World:
    def __init__(self, api: client.CustomObjectsApi, core: client.CoreV1Api, name: str) -> None:
        self.api, self.core, self.name = api, core, name
        self.namespace = f"tenant-{name}"

    def create(self, plural: str, body: dict[str, Any]) -> None:
        self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)

    def set_status(self, plural: str, name: str, status: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, plural, name, {"status": status}
        )

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return dict(
            self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
        )


@pytest_asyncio.fixture(loop_scope="session")
async def context(
    api_client: client.ApiClient, db_pool: asyncpg.Pool, postgres_dsn: str
) -> AsyncIterator[Context]:
    settings = OperatorSettings(
        database_url=postgres_dsn,
        sender_image="unused",
        sender_secret="",
        resync_seconds=60,
        tenant_data_retention=timedelta(days=30),
        metrics_port=0,
        purge_interval_seconds=3600,
    )
    yield Context(settings=settings, kube=Kube(api_client), db=db_pool)


EVENTS: asyncio.Queue[Any] = asyncio.Queue()


async def run_reconcile(ctx: Context, world: World, name: str) -> dict[str, Any]:
    """One pass as kopf would run it (the framework's, status written through the API); the
    events it posts are collected in EVENTS (kopf's own queue, not sent to the API)."""
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(EVENTS)
    posting.event_queue_loop_var.set(asyncio.get_running_loop())
    body = kopf.Body(world.get("campaigns", name))  # type: ignore[arg-type]
    controller = CampaignController(
        CampaignSettings("https://unsubscribe.penguinmails.test/u", "penguinmails"), 60
    )
    # Status goes through the controller's own writer (the status subresource).
    await controller.run(ctx, body, retry=0, logger=log, timer=False)
    return world.get("campaigns", name)


def held_by(world: World, campaign: str) -> set[str]:
    """The objects carrying `campaign`'s in-use label (which the inuse-guard policy protects)."""
    return {
        name
        for plural, name in (("sendingdomains", "acme"), ("smtpservers", "relay"))
        if label_key(campaign) in (world.get(plural, name)["metadata"].get("labels") or {})
    }


@pytest.fixture()
def leftovers(
    custom_objects: client.CustomObjectsApi, core: client.CoreV1Api
) -> Iterator[list[str]]:
    """Tenants (and their namespaces) to delete afterwards, so that no later operator resumes
    what this test left. No operator ran here, so nothing carries a finalizer."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(f"tenant-{name}")
        with contextlib.suppress(client.ApiException):
            custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


async def test_preflight_gates_then_campaign_sends_and_completes(
    context: Context,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    leftovers: list[str],
) -> None:
    name = f"camp-{uuid.uuid4().hex[:6]}"
    leftovers.append(name)
    world = World(custom_objects, core, name)
    tenant = custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {
                "tier": "starter",
                "contactEmail": "ops@acme.example",
                "postalAddress": {"street": "1 Main St", "city": "Springfield", "country": "US"},
            },
        },
    )
    core.create_namespace({"metadata": {"name": world.namespace}})
    tenant_id = await upsert_tenant(
        db_pool,
        name=name,
        tier="starter",
        namespace=world.namespace,
        display_name=None,
        contact_email="ops@acme.example",
        suspended=False,
    )
    async with tenant_connection(db_pool, tenant_id) as conn:
        csv = "email,first_name\n" + "".join(f"p{i}@dest.test,P{i}\n" for i in range(40))
        await import_contacts(conn, "leads", csv.encode(), KEY)
        # Subscribed to phase changes (read from the table below, not posted).
        await create_endpoint(
            conn,
            AuditContext("user:test"),
            "http://127.0.0.1:9/hooks",
            [EventType.CAMPAIGN_STATE_CHANGED],
            policy=EgressPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"),)),
        )

    with SinkServer() as sink:
        world.create(
            "smtpservers",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SmtpServer",
                "metadata": {"name": "relay"},
                "spec": {
                    "hostname": "relay.acme.example",
                    "provider": {"relay": {"host": "127.0.0.1", "port": sink.port, "tls": "none"}},
                },
            },
        )
        world.set_status("smtpservers", "relay", {"conditions": status_conditions(Ready="True")})
        world.create(
            "sendingdomains",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SendingDomain",
                "metadata": {"name": "acme"},
                "spec": {
                    "domain": "acme.example",
                    "dnsProvider": {"type": "manual"},
                    "smtpServerRefs": [{"name": "relay"}],
                },
            },
        )
        world.set_status(
            "sendingdomains",
            "acme",
            {"conditions": status_conditions(Ready="False", DNSVerified="False")},
        )
        world.create(
            "campaigns",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Campaign",
                "metadata": {"name": "hello"},
                "spec": {
                    "sendingDomainRef": {"name": "acme"},
                    "from": {"address": "jane@acme.example", "name": "Jane"},
                    "subject": "Hi {{ first_name }}",
                    "text": "Hello {{ first_name }}",
                    "audience": {"lists": ["leads"]},
                    "throttle": {"perMailboxPerDay": 1000},
                    "stopRules": {"minSample": 20, "maxBounceRate": 0.05},
                },
            },
        )

        # Unverified domain: Preflight=False names the rule and the fix; nothing is queued.
        obj = await run_reconcile(context, world, "hello")
        preflight = conditions_of(obj)["Preflight"]
        assert preflight["status"] == "False" and preflight["reason"] == "DomainNotVerified"
        assert "publish its records" in preflight["message"]
        event = EVENTS.get_nowait()
        assert (event.type, event.reason) == ("Warning", "DomainNotVerified")
        assert obj["status"]["phase"] == "Pending"
        assert held_by(world, "hello") == set()
        async with tenant_connection(db_pool, tenant_id) as conn:
            assert await conn.fetchval("SELECT count(*) FROM deliveries") == 0

        # Verified: the plan is written, 40 deliveries queued (once), the gate opens.
        world.set_status(
            "sendingdomains",
            "acme",
            {"conditions": status_conditions(Ready="True", DNSVerified="True")},
        )
        obj = await run_reconcile(context, world, "hello")
        assert conditions_of(obj)["Preflight"]["status"] == "True"
        assert obj["status"]["phase"] == "Sending"
        assert obj["status"]["counts"]["total"] == 40
        assert res.is_active_campaign(obj)  # what the Tenant controller scales the sender by
        annotations = custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name)[
            "metadata"
        ]["annotations"]
        assert annotations[ACTIVE_ANNOTATION] == "1"
        # While sending, its domain and relay are marked in use: they cannot be deleted.
        assert held_by(world, "hello") == {"acme", "relay"}
        obj = await run_reconcile(context, world, "hello")
        assert obj["status"]["counts"]["total"] == 40  # enqueue is idempotent

        # Deletion (the finalizer's handler) closes the gate at once.
        uid = uuid.UUID(obj["metadata"]["uid"])

        async def gate() -> bool:
            async with tenant_connection(db_pool, tenant_id) as conn:
                return bool(
                    await conn.fetchval("SELECT sending FROM campaigns WHERE uid = $1", uid)
                )

        assert await gate()
        await cleanup(context, kopf.Body(obj), 0)  # type: ignore[arg-type]
        assert not await gate()
        assert held_by(world, "hello") == set()  # released with the campaign
        obj = await run_reconcile(context, world, "hello")  # not deleted after all: reopens
        assert await gate()
        assert held_by(world, "hello") == {"acme", "relay"}

        # spec.paused closes the gate: a sender finds nothing to claim.
        custom_objects.patch_namespaced_custom_object(
            GROUP, VERSION, world.namespace, "campaigns", "hello", {"spec": {"paused": True}}
        )
        obj = await run_reconcile(context, world, "hello")
        assert obj["status"]["phase"] == "Paused"
        assert held_by(world, "hello") == set()  # paused: its domain may be deleted
        keys = [
            DkimKey(
                "rsa1",
                "rsa2048",
                KeyState.ACTIVE,
                datetime.now(UTC),
                generate_private_key("rsa2048"),
            )
        ]
        folder = tmp_path / "acme-dkim"
        folder.mkdir()
        for key, value in secret_data(KeySet(tuple(keys))).items():
            (folder / key).write_bytes(base64.b64decode(value))
        config = SenderConfig(
            tenant_id=tenant_id,
            token_key=MasterKeys.parse("controller-master-key-1234").token_key(tenant_id),
            poll_interval=0.05,
        )
        sender = Sender(db_pool, config, secrets=DirSecrets(tmp_path))
        await sender.run_until_idle()
        assert sink.messages == []

        # Resumed: the sender sends; 4 of 40 addresses bounce (10% > 5%): the stop rule fires.
        for i in range(4):
            sink.reply_for[f"p{i}@dest.test"] = (550, "5.1.1 no such user")
        custom_objects.patch_namespaced_custom_object(
            GROUP, VERSION, world.namespace, "campaigns", "hello", {"spec": {"paused": False}}
        )
        obj = await run_reconcile(context, world, "hello")
        assert obj["status"]["phase"] == "Sending"
        sender = Sender(db_pool, config, secrets=DirSecrets(tmp_path))
        await sender.run_until_idle()
        while not EVENTS.empty():
            EVENTS.get_nowait()
        obj = await run_reconcile(context, world, "hello")
        assert obj["status"]["phase"] == "Stopped"
        assert conditions_of(obj)["Ready"]["reason"] == "StopRule"
        assert "maxBounceRate" in conditions_of(obj)["Ready"]["message"]
        assert obj["status"]["bounceRate"] == 0.1
        event = EVENTS.get_nowait()
        assert (event.type, event.reason) == ("Warning", "StopRule")
        obj = await run_reconcile(context, world, "hello")
        assert obj["status"]["phase"] == "Stopped"  # sticky while the spec is unchanged
        assert held_by(world, "hello") == set()

        # Raising the limit resumes; everything is final: Completed, counts equal arrivals.
        custom_objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            world.namespace,
            "campaigns",
            "hello",
            {"spec": {"stopRules": {"maxBounceRate": 0.5}}},
        )
        obj = await run_reconcile(context, world, "hello")
        assert len(sink.messages) == 36
        assert obj["status"]["phase"] == "Completed"
        assert obj["status"]["counts"]["sent"] == 36
        assert obj["status"]["counts"]["bounced"] == 4
        assert obj["status"]["progress"] == 100
        assert obj["status"]["finishedAt"]
        assert held_by(world, "hello") == set()
        assert not res.is_active_campaign(obj)
        annotations = custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name)[
            "metadata"
        ]["annotations"]
        assert annotations[ACTIVE_ANNOTATION] == "0"
        assert tenant["metadata"]["name"] == name
    # Every phase change was one campaign.state_changed event, in order, none repeated.
    async with tenant_connection(db_pool, tenant_id) as conn:
        rows = await conn.fetch("SELECT payload FROM webhook_events ORDER BY created_at, id")
    changes = [json.loads(r["payload"])["data"] for r in rows]
    chain = [(c["previousPhase"], c["phase"]) for c in changes]
    print(f"campaign.state_changed events: {chain}")
    assert {c["campaign"] for c in changes} == {"hello"}
    assert chain[0][0] is None and chain[-1][1] == "Completed"
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chain)), chain
    assert {"Pending", "Sending", "Paused", "Stopped", "Completed"} <= {c[1] for c in chain}
