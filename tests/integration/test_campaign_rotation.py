"""Campaign.spec.rotation through the Campaign controller on the real API server and
PostgreSQL, then the real sender: mailboxes of two SendingDomains, each domain with its own
server; preflight names a missing mailbox; the plan carries each mailbox with its domain's
DKIM Secret and servers and today's warm-up limit; status.mailboxes shows each one's warm-up
day, limit and counts. (Same harness as test_campaign_controller.py: the reconcile runs in the
test process, so no SendingDomain or SmtpServer controller re-judges the statuses set here.)
"""

from __future__ import annotations

import base64
import collections
import email
import email.utils
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from kubernetes import client

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import get_campaign_plan
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.devstack.sink import SinkServer
from penguinmails.operator.context import Context
from penguinmails.sender.engine import Sender, SenderConfig
from penguinmails.sender.secrets import DirSecrets
from tests.integration.conftest import GROUP, VERSION
from tests.integration.test_campaign_controller import (
    EVENTS,
    World,
    conditions_of,
    context,  # noqa: F401 (fixture)
    leftovers,  # noqa: F401 (fixture)
    run_reconcile,
    status_conditions,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_events_left() -> Iterator[None]:
    """The reconciles here post to test_campaign_controller's event queue: leave it empty."""
    yield
    while not EVENTS.empty():
        EVENTS.get_nowait()


KEY = b"rotation-controller-test-key"


def _mailbox_status(obj: dict[str, object]) -> dict[str, dict[str, object]]:
    status = obj.get("status") or {}
    assert isinstance(status, dict)
    return {m["address"]: m for m in status.get("mailboxes") or []}


async def test_rotation_plans_each_mailbox_with_its_domain_servers_and_warmup(
    context: Context,  # noqa: F811
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    leftovers: list[str],  # noqa: F811
) -> None:
    name = f"rot-{uuid.uuid4().hex[:6]}"
    leftovers.append(name)
    world = World(custom_objects, core, name)
    custom_objects.create_cluster_custom_object(
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
        csv = "email,first_name\n" + "".join(f"p{i}@dest.test,P{i}\n" for i in range(60))
        await import_contacts(conn, "leads", csv.encode(), KEY)

    with SinkServer() as sink_a, SinkServer() as sink_b:
        for server, sink in (("relay-a", sink_a), ("relay-b", sink_b)):
            world.create(
                "smtpservers",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "SmtpServer",
                    "metadata": {"name": server},
                    "spec": {
                        "hostname": f"{server}.acme.example",
                        "provider": {
                            "relay": {"host": "127.0.0.1", "port": sink.port, "tls": "none"}
                        },
                    },
                },
            )
            world.set_status("smtpservers", server, {"conditions": status_conditions(Ready="True")})
        domains = {
            "acme": (
                "acme.example",
                "relay-a",
                [
                    {"localPart": "jane", "displayName": "Jane", "dailyLimit": 40},
                    {
                        "localPart": "sales",
                        "dailyLimit": 80,
                        # Day 0: 20; +100% a day: 40 on day 1, the 80 of dailyLimit from day 2.
                        "warmup": {"initialPerDay": 20, "dailyIncreasePercent": 100},
                    },
                    {"localPart": "cold", "paused": True},
                ],
            ),
            "acme-mail": ("acme-mail.example", "relay-b", [{"localPart": "bob", "dailyLimit": 40}]),
        }
        for ref, (fqdn, server, mailboxes) in domains.items():
            world.create(
                "sendingdomains",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "SendingDomain",
                    "metadata": {"name": ref},
                    "spec": {
                        "domain": fqdn,
                        "dnsProvider": {"type": "manual"},
                        "smtpServerRefs": [{"name": server}],
                        "mailboxes": mailboxes,
                    },
                },
            )
            world.set_status(
                "sendingdomains",
                ref,
                {"conditions": status_conditions(Ready="True", DNSVerified="True")},
            )
        world.create(
            "campaigns",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Campaign",
                "metadata": {"name": "hello"},
                "spec": {
                    "sendingDomainRef": {"name": "acme"},
                    "from": {"address": "jane@acme.example", "name": "Acme"},
                    "rotation": {
                        "mailboxes": [
                            {"sendingDomainRef": {"name": "acme"}},
                            {
                                "sendingDomainRef": {"name": "acme-mail"},
                                "localParts": ["bob", "al"],
                            },
                        ]
                    },
                    "subject": "Hi {{ first_name }}",
                    "text": "Hello {{ first_name }}",
                    "audience": {"lists": ["leads"]},
                    "throttle": {"perMailboxPerDay": 1000},
                },
            },
        )

        # A mailbox the domain does not have: preflight names the field and the fix.
        obj = await run_reconcile(context, world, "hello")
        preflight = conditions_of(obj)["Preflight"]
        assert preflight["status"] == "False" and preflight["reason"] == "MailboxNotFound"
        assert "spec.rotation.mailboxes[1].localParts" in preflight["message"]
        assert "has no mailbox al" in preflight["message"]
        custom_objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            world.namespace,
            "campaigns",
            "hello",
            {
                "spec": {
                    "rotation": {
                        "mailboxes": [
                            {"sendingDomainRef": {"name": "acme"}},
                            {"sendingDomainRef": {"name": "acme-mail"}, "localParts": ["bob"]},
                        ]
                    }
                }
            },
        )
        obj = await run_reconcile(context, world, "hello")
        assert obj["status"]["phase"] == "Sending", obj["status"]
        uid = uuid.UUID(obj["metadata"]["uid"])
        async with tenant_connection(db_pool, tenant_id) as conn:
            plan = await get_campaign_plan(conn, uid)
        assert plan is not None
        # The paused mailbox is left out; each mailbox has its domain's keys and server.
        planned = {m.address: m for m in plan.mailboxes}
        assert sorted(planned) == [
            "bob@acme-mail.example",
            "jane@acme.example",
            "sales@acme.example",
        ]
        assert planned["bob@acme-mail.example"].dkim_secret == "acme-mail-dkim"
        assert [r.name for r in planned["bob@acme-mail.example"].relays] == ["relay-b"]
        assert [r.name for r in planned["jane@acme.example"].relays] == ["relay-a"]
        assert planned["jane@acme.example"].display_name == "Jane"
        assert planned["sales@acme.example"].display_name == "Acme"  # spec.from's name
        assert planned["sales@acme.example"].daily_limit == 20  # warm-up day 0
        shown = _mailbox_status(obj)
        assert shown["sales@acme.example"]["warmupDay"] == 0
        assert shown["sales@acme.example"]["dailyLimit"] == 20
        assert shown["jane@acme.example"]["dailyLimit"] == 40
        assert "warmupDay" not in shown["jane@acme.example"]
        # The sender may read both domains' DKIM Secrets (and nothing else).
        role = client.RbacAuthorizationV1Api(core.api_client).read_namespaced_role(
            f"penguinmails-sender-campaign-{uid}", world.namespace
        )
        allowed = {n for rule in role.rules for n in rule.resource_names or []}
        assert {"acme-dkim", "acme-mail-dkim"} <= allowed
        # Both domains are held while the campaign sends.
        for ref in domains:
            labels = world.get("sendingdomains", ref)["metadata"].get("labels") or {}
            assert any(k.startswith("inuse.penguinmails.io/") for k in labels), ref

        # The real sender sends from the three mailboxes, each through its domain's server.
        for ref in domains:
            key = DkimKey(
                "ed1",
                "ed25519",
                KeyState.ACTIVE,
                datetime.now(UTC),
                generate_private_key("ed25519"),
            )
            folder = tmp_path / f"{ref}-dkim"
            folder.mkdir()
            for item, value in secret_data(KeySet((key,))).items():
                (folder / item).write_bytes(base64.b64decode(value))
        config = SenderConfig(
            tenant_id=tenant_id,
            token_key=MasterKeys.parse("rotation-controller-master-key").token_key(tenant_id),
            poll_interval=0.05,
        )
        await Sender(db_pool, config, secrets=DirSecrets(tmp_path)).run_until_idle()

        def senders(sink: SinkServer) -> collections.Counter[str]:
            return collections.Counter(
                email.utils.parseaddr(str(email.message_from_bytes(m.data)["From"]))[1]
                for m in sink.messages
            )

        via_a, via_b = senders(sink_a), senders(sink_b)
        assert set(via_a) == {"jane@acme.example", "sales@acme.example"}
        assert set(via_b) == {"bob@acme-mail.example"}
        obj = await run_reconcile(context, world, "hello")
        shown = _mailbox_status(obj)
        assert {a: m["sent"] for a, m in shown.items()} == dict(via_a + via_b)
        print(f"\nper mailbox: {dict(via_a + via_b)}")

        # A day after its first message, the warm-up mailbox may send 20 x 2 = 40.
        async with tenant_connection(db_pool, tenant_id) as conn:
            await conn.execute(
                "UPDATE deliveries SET sent_at = sent_at - interval '1 day 1 hour' "
                "WHERE mailbox = 'sales@acme.example'"
            )
        obj = await run_reconcile(context, world, "hello")
        shown = _mailbox_status(obj)
        assert shown["sales@acme.example"]["warmupDay"] == 1
        assert shown["sales@acme.example"]["dailyLimit"] == 40
        async with tenant_connection(db_pool, tenant_id) as conn:
            plan = await get_campaign_plan(conn, uid)
        assert plan is not None
        assert {m.address: m.daily_limit for m in plan.mailboxes}["sales@acme.example"] == 40
