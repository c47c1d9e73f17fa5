"""DNS rebinding (issue 9): a relay name that resolved to an allowed address when it was
checked, and resolves to a forbidden one when the sender connects, is refused at connect
time. The real sender process resolves through a local Knot DNS (PM_DNS_RESOLVER) whose
answer the test changes; the forbidden address has a live SMTP server on it, so a sender
that connected there would deliver to it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import dns.query
import dns.update
import pytest
from aiosmtpd.controller import Controller

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    Relay,
    campaign_counts,
    enqueue,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.devstack.sink import SinkServer
from tests.integration.sender_support import dkim_folder, tenant_row

pytestmark = pytest.mark.integration

KEY = b"rebinding-test-key"
KEYS = MasterKeys.parse("rebinding-platform-master-key")
ALLOWED, FORBIDDEN = "127.0.0.1", "127.0.0.2"


class _Collect:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received += envelope.rcpt_tos
        return "250 OK"


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"], env=env, stderr=subprocess.PIPE
    )


async def test_relay_name_rebound_to_a_forbidden_address_is_refused_at_connect(
    db_pool: asyncpg.Pool, postgres_dsn: str, tmp_path: Path
) -> None:
    name = f"dnsr-{uuid.uuid4().hex[:6]}"
    tenant_id = await tenant_row(db_pool, name)
    dkim_folder(tmp_path / "d-dkim", "ed1", "ed25519")
    zone = minimal_zone("relay.test", extra=f"smtp 1 IN A {ALLOWED}")
    forbidden = _Collect()
    with (
        KnotServer(tmp_path, zones={"relay.test": zone}) as knot,
        SinkServer() as sink,
    ):
        # A live SMTP server at the forbidden address, on the same port as the allowed one.
        other = Controller(forbidden, hostname=FORBIDDEN, port=sink.port)
        other.start()
        try:
            socket.create_connection((FORBIDDEN, sink.port), timeout=5).close()  # reachable
            plan = CampaignPlan(
                from_address="jane@sender.example",
                subject="Hi",
                text="Hello",
                domain="sender.example",
                dkim_secret="d-dkim",
                unsubscribe_url="https://u.example/u",
                unsubscribe_mailto="unsubscribe@sender.example",
                postal_address="1 Way",
                relays=[Relay(name="relay", host="smtp.relay.test", port=sink.port, tls="none")],
                per_mailbox_per_day=100_000,
            )
            env = {
                **os.environ,
                "PM_TENANT": name,
                "PM_DATABASE_URL": postgres_dsn,
                "PM_TOKEN_KEY": KEYS.token_key(tenant_id).encode(),
                "PM_SECRETS_DIR": str(tmp_path),
                "PM_POLL_SECONDS": "0.1",
                "PM_METRICS_PORT": "0",
                # The platform allows this one loopback address for relays, not the rest of
                # 127.0.0.0/8 (a stand-in for the cluster's services or cloud metadata).
                "PM_EGRESS_ALLOW": f"{ALLOWED}/32",
                "PM_DNS_RESOLVER": f"{knot.address}:{knot.port}",
            }

            async def campaign(contacts: str) -> uuid.UUID:
                uid = uuid.uuid4()
                csv = "email\n" + "".join(f"{contacts}{i}@dest.test\n" for i in range(10))
                async with tenant_connection(db_pool, tenant_id) as conn:
                    await import_contacts(conn, contacts, csv.encode(), KEY)
                    await upsert_campaign(conn, uid=uid, namespace="ns", name=contacts, plan=plan)
                    await enqueue(conn, uid, [contacts])
                    await set_sending(conn, uid, True)
                return uid

            async def rows(uid: uuid.UUID) -> list[asyncpg.Record]:
                async with tenant_connection(db_pool, tenant_id) as conn:
                    return list(
                        await conn.fetch(
                            "SELECT state, attempts, claims, reason FROM deliveries "
                            "WHERE campaign_uid = $1",
                            uid,
                        )
                    )

            # The name resolves to the allowed address: mail goes through.
            first = await campaign("one")
            sender = _start(env)
            try:
                for _ in range(600):
                    async with tenant_connection(db_pool, tenant_id) as conn:
                        if (await campaign_counts(conn, first))["sent"] == 10:
                            break
                    await asyncio.sleep(0.1)
            finally:
                sender.terminate()
                sender.communicate(timeout=30)
            assert len(sink.messages) == 10

            # Rebound: the same name now answers the forbidden address.
            update = dns.update.UpdateMessage(
                "relay.test", keyring=knot.tsig.keyring(), keyname=knot.tsig.key_name
            )
            update.replace("smtp", 1, "A", FORBIDDEN)
            assert dns.query.tcp(update, knot.address, port=knot.port, timeout=5).rcode() == 0

            second = await campaign("two")
            sender = _start(env)
            try:
                for _ in range(600):
                    found = await rows(second)
                    if all(r["claims"] >= 1 and r["reason"] for r in found):
                        break
                    await asyncio.sleep(0.1)
            finally:
                sender.terminate()
                stderr = sender.communicate(timeout=30)[1].decode(errors="replace")
            found = await rows(second)
            print(f"\nreasons: {sorted({r['reason'] for r in found})}")
            # Refused before connecting: nothing reached the forbidden server, no attempt used,
            # the rows wait (queued) with the reason naming the field, the name and the address.
            assert forbidden.received == []
            assert len(sink.messages) == 10
            assert {r["state"] for r in found} == {"queued"}
            assert {r["attempts"] for r in found} == {0}
            for row in found:
                assert "SmtpServer relay: relay host: smtp.relay.test (127.0.0.2)" in row["reason"]
                assert "loopback" in row["reason"] and "PM_EGRESS_ALLOW" in row["reason"]
            assert "relay relay unreachable" in stderr and "Traceback" not in stderr
        finally:
            other.stop()
