"""A throttled backlog is scheduled, not churned: the real sender process, Redis, PostgreSQL.

60 contacts of one destination provider limited to 5 messages/s (PM_PROVIDER_RATE, the
production setting): most rows are refused a token when first claimed. Each refused row is
promised the token that will exist for it (common.throttle) and comes back then, so every row
is claimed at most twice, which the ledger's claim counter shows.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
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

pytestmark = pytest.mark.integration

KEY = b"backlog-test-key"
KEYS = MasterKeys.parse("backlog-platform-master-key")
CONTACTS = 60
RATE = 5


def start_sender(
    tenant: str, tenant_id: uuid.UUID, dsn: str, redis_url: str, secrets: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PM_TENANT": tenant,
        "PM_DATABASE_URL": dsn,
        "PM_REDIS_URL": redis_url,
        "PM_TOKEN_KEY": KEYS.token_key(tenant_id).encode(),
        "PM_SECRETS_DIR": str(secrets),
        "PM_PROVIDER_RATE": str(RATE),
        "PM_POLL_SECONDS": "0.1",
        "PM_METRICS_PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_throttled_backlog_is_claimed_at_most_twice_per_row(
    db_pool: asyncpg.Pool, postgres_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    name = f"backlog-{uuid.uuid4().hex[:6]}"
    tenant_id = await upsert_tenant(
        db_pool,
        name=name,
        tier="starter",
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )
    folder = tmp_path / "d-dkim"
    folder.mkdir()
    key = DkimKey(
        "ed1", "ed25519", KeyState.ACTIVE, datetime.now(UTC), generate_private_key("ed25519")
    )
    for item, value in secret_data(KeySet((key,))).items():
        (folder / item).write_bytes(base64.b64decode(value))
    with SinkServer() as sink:
        plan = CampaignPlan(
            from_address="jane@sender.example",
            subject="Hi",
            text="Hello {{ first_name }}",
            domain="sender.example",
            dkim_secret="d-dkim",
            unsubscribe_url="https://u.example/u",
            unsubscribe_mailto="unsubscribe@sender.example",
            postal_address="1 Way",
            relays=[Relay(name="sink", host="127.0.0.1", port=sink.port, tls="none")],
            per_mailbox_per_day=100_000,
        )
        uid = uuid.uuid4()
        csv = "email,first_name\n" + "".join(f"r{i}@dest.test,R{i}\n" for i in range(CONTACTS))
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, "l", csv.encode(), KEY)
            await upsert_campaign(conn, uid=uid, namespace="ns", name="c", plan=plan)
            await enqueue(conn, uid, ["l"])
            await set_sending(conn, uid, True)
        sender = start_sender(name, tenant_id, postgres_dsn, redis_url, tmp_path)
        try:
            for _ in range(1200):
                async with tenant_connection(db_pool, tenant_id) as conn:
                    counts = await campaign_counts(conn, uid)
                if counts["sent"] == CONTACTS:
                    break
                await asyncio.sleep(0.1)
        finally:
            sender.terminate()
            stderr = sender.communicate(timeout=30)[1].decode()
        assert counts["sent"] == CONTACTS, (counts, stderr[-2000:])
        async with tenant_connection(db_pool, tenant_id) as conn:
            claims = [r["claims"] for r in await conn.fetch("SELECT claims FROM deliveries")]
            attempts = {r["attempts"] for r in await conn.fetch("SELECT attempts FROM deliveries")}
        print(f"\n{CONTACTS} rows, {sum(claims)} claims, at most {max(claims)} per row")
        assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(
            f"r{i}@dest.test" for i in range(CONTACTS)
        )
        # Throttled: at least the rows beyond the first burst were refused once...
        assert sum(claims) > CONTACTS
        # ...and came back once, when their token existed.
        assert max(claims) <= 2
        assert attempts == {1}  # a throttle wait is not an attempt
