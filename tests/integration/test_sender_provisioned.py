"""A shared-tier tenant sends through the platform's shared pool: by hostname, TLS verified.

The shared pool lives in the platform namespace; the tenant's sender may read Secrets only in
its own namespace. The Campaign controller (run as kopf would, on the real API server) copies
each pool server's credentials and CA into the tenant namespace (never the platform's other
Secrets, such as MailU's admin token); the real `penguinmails-sender` process then reads them
through the API and relays through a real Postfix that presents a certificate for the name
`localhost` (not for 127.0.0.1): STARTTLS is verified against the hostname it connected to.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import kopf
import pytest
from kopf._core.engines import posting
from kubernetes import client

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import campaign_counts
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer
from penguinmails.operator.campaign import SHARED_POOL_LABEL, CampaignController, CampaignSettings
from penguinmails.operator.context import Context
from tests.integration.conftest import GROUP, VERSION, Cluster
from tests.integration.test_campaign_controller import (  # noqa: F401 (fixtures)
    World,
    context,
    leftovers,
    status_conditions,
)

pytestmark = pytest.mark.integration

KEY = b"provisioned-test-key"
KEYS = MasterKeys.parse("provisioned-platform-master-key")
CONTACTS = 30


EVENTS: asyncio.Queue[Any] = asyncio.Queue()


async def run_reconcile(ctx: Context, world: World, name: str, platform: str) -> dict[str, Any]:
    """One reconcile as kopf would run it (see test_campaign_controller), with `platform` as
    the shared pool's namespace."""
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(EVENTS)  # this module's own: other tests read theirs
    posting.event_queue_loop_var.set(asyncio.get_running_loop())
    body = kopf.Body(world.get("campaigns", name))  # type: ignore[arg-type]
    settings = CampaignSettings("https://unsubscribe.penguinmails.test/u", platform)
    controller = CampaignController(settings, 60)
    await controller.run(ctx, body, retry=0, logger=logging.getLogger(__name__), timer=False)
    return world.get("campaigns", name)


def secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "stringData": data}


def read_secret(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    found = core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (found.data or {}).items()}


def start_sender(
    cluster: Cluster, tenant: str, tenant_id: uuid.UUID, dsn: str
) -> subprocess.Popen[bytes]:
    """The real sender, reading Secrets through the API in its namespace (no PM_SECRETS_DIR)."""
    return subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"],
        env={
            **{k: v for k, v in os.environ.items() if k != "PM_SECRETS_DIR"},
            "KUBECONFIG": str(cluster.kubeconfig),
            "PM_TENANT": tenant,
            "PM_DATABASE_URL": dsn,
            "PM_TOKEN_KEY": KEYS.token_key(tenant_id).encode(),
            "PM_POLL_SECONDS": "0.2",
            "PM_METRICS_PORT": "0",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_shared_pool_by_hostname_with_copied_credentials_and_ca(
    context: Context,  # noqa: F811
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    db_pool: asyncpg.Pool,
    postgres_dsn: str,
    cluster: Cluster,
    services_dir: Path,
    leftovers: list[str],  # noqa: F811
) -> None:
    name = f"pool-{uuid.uuid4().hex[:6]}"
    leftovers.append(name)
    world = World(custom_objects, core, name)
    platform = f"platform-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": platform}})
    try:
        with (
            SinkServer() as sink,
            PostfixServer(
                services_dir,
                relayhost=sink.address,
                tls=True,
                hostname="localhost",
                name=f"pf-{name}",
            ) as relay,
        ):
            assert relay.tls_cert is not None
            await _scenario(
                context,
                world,
                core,
                custom_objects,
                db_pool,
                postgres_dsn,
                cluster,
                platform,
                sink,
                relay,
            )
    finally:
        core.delete_namespace(platform)


async def _scenario(
    context: Context,  # noqa: F811
    world: World,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    db_pool: asyncpg.Pool,
    postgres_dsn: str,
    cluster: Cluster,
    platform: str,
    sink: SinkServer,
    relay: PostfixServer,
) -> None:
    assert relay.tls_cert is not None
    ca_pem = relay.tls_cert.read_text()
    core.create_namespaced_secret(platform, secret(platform, "pool-ca", {"ca.pem": ca_pem}))
    core.create_namespaced_secret(
        platform, secret(platform, "pool-creds", {"username": "u1", "password": "p1-secret"})
    )
    core.create_namespaced_secret(
        platform,
        secret(
            platform,
            "c-vps-mailu",
            {"secret-key": "sk", "api-token": "admin-token", "relay-password": "vps-pass"},
        ),
    )
    pool_label = {SHARED_POOL_LABEL: "shared"}
    servers: list[tuple[str, dict[str, Any]]] = [
        # First in the list, so the one this campaign's sender uses (rotation is not built yet).
        (
            "a-tls",
            {
                "relay": {
                    "host": "localhost",
                    "port": relay.port,
                    "tls": "starttls",
                    "caSecretRef": {"name": "pool-ca", "key": "ca.pem"},
                }
            },
        ),
        (
            "b-auth",
            {
                "relay": {
                    "host": "smtp.pool.example",
                    "credentialsSecretRef": {"name": "pool-creds"},
                }
            },
        ),
        (
            "c-vps",
            {
                "hostwinds": {
                    "locationId": 1,
                    "planId": 1,
                    "template": "debian-12",
                    "apiKeySecretRef": {"name": "hw", "key": "api-key"},
                    "sshKeySecretRef": {"name": "hw", "key": "ssh"},
                }
            },
        ),
    ]
    for server, provider in servers:
        custom_objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            platform,
            "smtpservers",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SmtpServer",
                "metadata": {"name": server, "labels": pool_label},
                "spec": {"hostname": f"{server}.pool.example", "provider": provider},
            },
        )
        custom_objects.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            platform,
            "smtpservers",
            server,
            {"status": {"conditions": status_conditions(Ready="True"), "ipAddress": "127.0.0.9"}},
        )

    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": world.name},
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
        name=world.name,
        tier="starter",
        namespace=world.namespace,
        display_name=None,
        contact_email="ops@acme.example",
        suspended=False,
    )
    async with tenant_connection(db_pool, tenant_id) as conn:
        csv = "email,first_name\n" + "".join(f"p{i}@dest.test,P{i}\n" for i in range(CONTACTS))
        await import_contacts(conn, "leads", csv.encode(), KEY)
    keys = [
        DkimKey(
            "rsa1", "rsa2048", KeyState.ACTIVE, datetime.now(UTC), generate_private_key("rsa2048")
        )
    ]
    core.create_namespaced_secret(
        world.namespace,
        {"metadata": {"name": "acme-dkim"}, "data": secret_data(KeySet(tuple(keys)))},
    )
    world.create(
        "sendingdomains",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SendingDomain",
            "metadata": {"name": "acme"},
            "spec": {"domain": "acme.example", "dnsProvider": {"type": "manual"}},
        },
    )
    world.set_status(
        "sendingdomains",
        "acme",
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
                "from": {"address": "jane@acme.example", "name": "Jane"},
                "subject": "Hi {{ first_name }}",
                "text": "Hello {{ first_name }}",
                "audience": {"lists": ["leads"]},
                "throttle": {"perMailboxPerDay": 1000},
            },
        },
    )
    obj = await run_reconcile(context, world, "hello", platform)
    assert obj["status"]["phase"] == "Sending", obj["status"]

    # What the tenant's sender may read: copies in its namespace, only the keys it needs.
    assert read_secret(core, world.namespace, "pool-a-tls-relay") == {"ca.crt": ca_pem}
    assert read_secret(core, world.namespace, "pool-b-auth-relay") == {
        "username": "u1",
        "password": "p1-secret",
    }
    assert read_secret(core, world.namespace, "pool-c-vps-relay") == {
        "username": "relay@pool.example",
        "password": "vps-pass",
    }
    uid = uuid.UUID(obj["metadata"]["uid"])
    async with tenant_connection(db_pool, tenant_id) as conn:
        plan = await conn.fetchval("SELECT spec->'relays' FROM campaigns WHERE uid = $1", uid)
    assert '"host": "localhost"' in plan and "127.0.0.9" not in plan
    assert '"host": "c-vps.pool.example"' in plan
    # The sender's ServiceAccount may read exactly those Secrets (operator/tenant_resources.py).
    (access,) = (
        client.RbacAuthorizationV1Api(core.api_client)
        .list_namespaced_role(world.namespace, label_selector="penguinmails.io/campaign=hello")
        .items
    )
    assert access.rules[0].resource_names == [
        "acme-dkim",
        "pool-a-tls-relay",
        "pool-b-auth-relay",
        "pool-c-vps-relay",
    ]

    sender = start_sender(cluster, world.name, tenant_id, postgres_dsn)
    try:
        for _ in range(600):
            async with tenant_connection(db_pool, tenant_id) as conn:
                counts = await campaign_counts(conn, uid)
            if counts["sent"] + counts["failed"] + counts["deferred"] >= CONTACTS:
                break
            await asyncio.sleep(0.2)
        for _ in range(300):
            if len(sink.messages) >= CONTACTS:
                break
            await asyncio.sleep(0.1)
    finally:
        sender.terminate()
        stderr = sender.communicate(timeout=30)[1].decode()
    assert counts["sent"] == CONTACTS, (counts, stderr[-2000:])
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(
        f"p{i}@dest.test" for i in range(CONTACTS)
    )
    # Postfix records the TLS session of the submission in its Received header.
    for message in sink.messages:
        assert b"with ESMTPS" in message.data, message.data[:600]
