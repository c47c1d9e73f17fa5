"""Server rotation: a campaign with two relays (two real Postfix instances) sends through both,
and when one is stopped mid-campaign its work finishes on the other, with nothing lost."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

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
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer
from tests.integration.sender_support import dkim_folder, tenant_row

pytestmark = pytest.mark.integration

KEY = b"rotation-test-key"
KEYS = MasterKeys.parse("rotation-platform-master-key")
CONTACTS = 200


def start_sender(
    tenant: str, tenant_id: uuid.UUID, dsn: str, secrets: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"],
        env={
            **os.environ,
            "PM_TENANT": tenant,
            "PM_DATABASE_URL": dsn,
            "PM_TOKEN_KEY": KEYS.token_key(tenant_id).encode(),
            "PM_SECRETS_DIR": str(secrets),
            "PM_POLL_SECONDS": "0.1",
            "PM_METRICS_PORT": "0",
            "PM_SENDER_CONCURRENCY": "8",
            # A relay stopped mid-transaction may leave a message whose result is unknown:
            # sent again after 2 s here (the default delay is test_sender_semantics.py's).
            "PM_UNCERTAIN_RETRY_SECONDS": "2",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_two_relays_carry_mail_and_a_stopped_one_is_skipped(
    db_pool: asyncpg.Pool, postgres_dsn: str, services_dir: Path, tmp_path: Path
) -> None:
    name = f"rot-{uuid.uuid4().hex[:6]}"
    tenant_id = await tenant_row(db_pool, name)
    dkim_folder(tmp_path / "d-dkim", "ed1", "ed25519")
    with (
        SinkServer() as recipients,
        PostfixServer(
            services_dir, relayhost=recipients.address, hostname="relay1.test", name=f"{name}-1"
        ) as relay1,
        PostfixServer(
            services_dir, relayhost=recipients.address, hostname="relay2.test", name=f"{name}-2"
        ) as relay2,
    ):
        plan = CampaignPlan(
            from_address="jane@sender.example",
            subject="Hi",
            text="Hello {{ first_name }}",
            domain="sender.example",
            dkim_secret="d-dkim",
            unsubscribe_url="https://u.example/u",
            unsubscribe_mailto="unsubscribe@sender.example",
            postal_address="1 Way",
            relays=[
                Relay(name="relay1", host="127.0.0.1", port=relay1.port, tls="none"),
                Relay(name="relay2", host="127.0.0.1", port=relay2.port, tls="none"),
            ],
            per_mailbox_per_day=100_000,
        )
        uid = uuid.uuid4()
        csv = "email,first_name\n" + "".join(f"r{i}@dest.test,R{i}\n" for i in range(CONTACTS))
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, "l", csv.encode(), KEY)
            await upsert_campaign(conn, uid=uid, namespace="ns", name="c", plan=plan)
            await enqueue(conn, uid, ["l"])
            await set_sending(conn, uid, True)

        async def sent() -> int:
            async with tenant_connection(db_pool, tenant_id) as conn:
                return (await campaign_counts(conn, uid))["sent"]

        sender = start_sender(name, tenant_id, postgres_dsn, tmp_path)
        try:
            for _ in range(3000):
                if await sent() >= CONTACTS // 4:
                    break
                await asyncio.sleep(0.05)
            relay1.stop()  # mid-campaign
            stopped_at = await sent()
            for _ in range(1800):
                if await sent() == CONTACTS:
                    break
                await asyncio.sleep(0.1)
            for _ in range(100):  # relay2's queue drains
                if relay2.queue_size() == 0:
                    break
                await asyncio.sleep(0.1)
        finally:
            sender.terminate()
            stderr = sender.communicate(timeout=30)[1].decode()
        async with tenant_connection(db_pool, tenant_id) as conn:
            counts = await campaign_counts(conn, uid)
        assert counts["sent"] == CONTACTS and counts["failed"] == 0, (counts, stderr[-2000:])
        by_relay = collections.Counter(
            "relay1" if b"relay1.test" in m.data else "relay2" for m in recipients.messages
        )
        print(f"\nrelay1 stopped after {stopped_at} sent; carried: {dict(by_relay)}")
        # Both carried mail; everything arrived but what relay1 had accepted and still held
        # in its queue when it stopped (a relay's queue is its own; it delivers on restart).
        assert by_relay["relay1"] > 0 and by_relay["relay2"] > 0
        missing = {f"r{i}@dest.test" for i in range(CONTACTS)} - {
            m.rcpt_tos[0] for m in recipients.messages
        }
        print(f"not arrived: {len(missing)}, in relay1's queue: {relay1.queue_size()}")
        assert len(missing) <= relay1.queue_size()
        assert "relay relay1 unreachable" in stderr
