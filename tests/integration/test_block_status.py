"""A receivers' block shows in the status of the SmtpServer or SendingDomain it is about
(issue 10): the operator process reads the tenant's `sending_blocks` (recorded by the senders
and the intake) and writes `status.receiverBlock` with the reason and until when; a server
with fewer blocks than the threshold shows none. The rows are added as the intake adds them
(its platform login, in the tenant's scope), the objects are the tenant's, in its namespace.
A shared-pool server (platform namespace) is registered by the operator, shows the block
counted over every tenant, and is forgotten when it leaves the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from kubernetes import client

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.blocks import (
    BLOCK_PAUSE_SECONDS,
    BLOCK_STRIKES,
    Block,
    BlockScope,
    add_blocks,
    pool_server_name,
)
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.devstack.ports import free_port
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for

pytestmark = pytest.mark.integration


PLATFORM = f"platform-{secrets.token_hex(3)}"
"""This module's platform namespace (the shared pool's servers), its own in the shared cluster."""


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory) -> Iterator[OperatorProcess]:
    # No blocklists: nothing here needs the outside world.
    handle = operator_process(
        PM_DNSBL_ZONES="", PM_DOMAIN_BLOCKLISTS="", PM_PLATFORM_NAMESPACE=PLATFORM
    )
    yield handle
    handle.stop()
    assert "receiver-block" not in handle.log().partition("Traceback")[2]


def _server(port: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmtpServer",
        "metadata": {"name": "listed"},
        "spec": {
            "hostname": "relay.blocks.test",
            "provider": {"relay": {"host": "127.0.0.1", "port": port, "tls": "none"}},
        },
    }


def _domain(name: str, port: int) -> dict[str, Any]:
    # Its DNS provider answers nowhere: the domain never gets Ready, which the block's status
    # does not depend on.
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SendingDomain",
        "metadata": {"name": "main"},
        "spec": {
            "domain": name,
            "zone": "blocks.test",
            "dnsProvider": {
                "type": "rfc2136",
                "rfc2136": {"server": "127.0.0.1", "port": port, "tsigKeyName": "k"},
                "credentialsSecretRef": {"name": "tsig", "key": "secret"},
            },
        },
    }


async def test_a_block_shows_in_the_status_of_what_it_is_about(
    operator: OperatorProcess,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    db_pool: asyncpg.Pool,
) -> None:
    name = f"blk-{secrets.token_hex(3)}"
    namespace = f"tenant-{name}"
    tenant_id = await upsert_tenant(
        db_pool,
        name=name,
        tier="starter",
        namespace=namespace,
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )
    domain = f"{name}.blocks.test"
    core.create_namespace({"metadata": {"name": namespace}})

    def block(plural: str, obj: str) -> dict[str, Any]:
        found = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj)
        return dict((found.get("status") or {}).get("receiverBlock") or {})

    try:
        custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "smtpservers", _server(free_port())
        )
        custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "sendingdomains", _domain(domain, free_port())
        )
        # One block short of the threshold against the server, a full count (of
        # authentication failures) against the domain: as the intake records DSNs.
        async with tenant_connection(db_pool, tenant_id) as conn:
            await add_blocks(
                conn,
                [Block(BlockScope.SERVER, "listed", "dsn", None, "5.7.1")] * (BLOCK_STRIKES - 1)
                + [Block(BlockScope.DOMAIN, domain, "dsn", None, "5.7.26")] * BLOCK_STRIKES,
            )
            latest = await conn.fetchval("SELECT max(at) FROM sending_blocks")
        shown = wait_for(
            lambda: block("sendingdomains", "main"), timeout=120, what="the domain's block"
        )
        print(f"\nSendingDomain status.receiverBlock: {shown}")
        assert shown["strikes"] == BLOCK_STRIKES and shown["lastStatus"] == "5.7.26"
        assert "authentication" in shown["reason"]
        until = datetime.fromisoformat(shown["until"])
        expected = latest + timedelta(seconds=BLOCK_PAUSE_SECONDS)
        assert abs((until - expected).total_seconds()) < 1  # the second it was rounded to
        assert block("smtpservers", "listed") == {}

        # The server's third block: it shows there too.
        async with tenant_connection(db_pool, tenant_id) as conn:
            await add_blocks(conn, [Block(BlockScope.SERVER, "listed", "relay", None, "5.7.1")])
        shown = wait_for(
            lambda: block("smtpservers", "listed"), timeout=120, what="the server's block"
        )
        print(f"SmtpServer status.receiverBlock: {shown}")
        assert shown["strikes"] == BLOCK_STRIKES and shown["lastStatus"] == "5.7.1"
        assert "server's address" in shown["reason"]
    finally:
        for plural, obj in (("smtpservers", "listed"), ("sendingdomains", "main")):
            with contextlib.suppress(client.ApiException):
                custom_objects.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, obj
                )
        core.delete_namespace(namespace)


async def test_a_shared_pool_server_shows_the_block_counted_over_every_tenant(
    operator: OperatorProcess,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    db_pool: asyncpg.Pool,
) -> None:
    """A pool server (platform namespace, labelled shared) is registered by the operator, so
    strikes from any tenant count against it; its status shows them; unlabelled, it is
    forgotten (its strikes with it) and the block leaves its status."""
    name = f"pool-{secrets.token_hex(3)}"
    tenants = []
    for key in ("a", "b"):
        tenant = f"{name}-{key}"
        tenants.append(
            await upsert_tenant(
                db_pool,
                name=tenant,
                tier="starter",
                namespace=f"tenant-{tenant}",
                display_name=None,
                contact_email="ops@example.com",
                suspended=False,
            )
        )
    with contextlib.suppress(client.ApiException):
        core.create_namespace({"metadata": {"name": PLATFORM}})
    server = _server(free_port())
    server["metadata"] = {"name": name, "labels": {"penguinmails.io/pool": "shared"}}
    # What plans, the ledger and strikes call it (a tenant's own "pool-…" is not it).
    pooled = pool_server_name(PLATFORM, name)

    def block() -> dict[str, Any]:
        found = custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, PLATFORM, "smtpservers", name
        )
        return dict((found.get("status") or {}).get("receiverBlock") or {})

    async def registered() -> bool:
        found = await db_pool.fetchval("SELECT count(*) FROM pool_servers WHERE name = $1", pooled)
        return bool(found)

    try:
        custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, PLATFORM, "smtpservers", server
        )
        for _ in range(240):
            if await registered():
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the pool server was not registered within 120 s")
        # Three relay strikes from two tenants, as record_pool_strikes() writes them.
        now = await db_pool.fetchval("SELECT now()")
        delivery = 10**15 + int(name.removeprefix("pool-"), 16) * 10
        for i, tenant_id in enumerate([tenants[0], tenants[1], tenants[0]]):
            await db_pool.execute(
                "INSERT INTO pool_server_strikes (server, tenant_id, delivery_id, source, status,"
                " at) VALUES ($1, $2, $3, 'relay', '5.7.1', $4)",
                pooled,
                tenant_id,
                delivery + i,
                now - timedelta(seconds=30 - i),
            )
        shown = wait_for(block, timeout=120, what="the pool server's block")
        print(f"\npool SmtpServer status.receiverBlock: {shown}")
        assert shown["strikes"] == BLOCK_STRIKES and shown["lastStatus"] == "5.7.1"
        until = datetime.fromisoformat(shown["until"])
        expected = now - timedelta(seconds=28) + timedelta(seconds=BLOCK_PAUSE_SECONDS)
        assert abs((until - expected).total_seconds()) < 1

        # No longer in the pool: forgotten (the strikes with it), and the block goes.
        custom_objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            PLATFORM,
            "smtpservers",
            name,
            {"metadata": {"labels": {"penguinmails.io/pool": None}}},
        )
        wait_for(lambda: not block(), timeout=120, what="the block gone from status")
        assert not await registered()
        assert not await db_pool.fetchval(
            "SELECT count(*) FROM pool_server_strikes WHERE server = $1", pooled
        )
    finally:
        with contextlib.suppress(client.ApiException):
            custom_objects.delete_namespaced_custom_object(
                GROUP, VERSION, PLATFORM, "smtpservers", name
            )
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(PLATFORM)
