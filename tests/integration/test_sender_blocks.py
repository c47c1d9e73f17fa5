"""A server that receivers block (5.7.1 policy/reputation) takes strikes: after
`BLOCK_STRIKES` it is skipped and the campaign's other server carries the rest; nobody is
suppressed and the campaign is not paused (issue 10: one 5.7.1 paused the whole campaign)."""

from __future__ import annotations

import base64
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
    get_pause_reason,
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
from penguinmails.common.suppression import address_hash, is_suppressed
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.engine import BLOCK_STRIKES, Sender, SenderConfig
from penguinmails.sender.secrets import DirSecrets

pytestmark = pytest.mark.integration

KEY = b"blocks-test-key"
KEYS = MasterKeys.parse("blocks-platform-master-key")
CONTACTS = 60
CONCURRENCY = 4
SPAMHAUS = "5.7.1 Service unavailable; client host [127.0.0.1] blocked using zen.spamhaus.org"


async def test_a_blocked_server_is_skipped_and_nobody_is_suppressed(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    name = f"blk-{uuid.uuid4().hex[:6]}"
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
        "rsa1", "rsa2048", KeyState.ACTIVE, datetime.now(UTC), generate_private_key("rsa2048")
    )
    for item, value in secret_data(KeySet((key,))).items():
        (folder / item).write_bytes(base64.b64decode(value))
    addresses = [f"r{i}@dest.test" for i in range(CONTACTS)]
    with SinkServer() as listed, SinkServer() as clean:
        for address in addresses:
            listed.reply_for[address] = (550, SPAMHAUS)
        plan = CampaignPlan(
            from_address="jane@sender.example",
            subject="Hi",
            text="Hello",
            domain="sender.example",
            dkim_secret="d-dkim",
            unsubscribe_url="https://u.example/u",
            unsubscribe_mailto="unsubscribe@sender.example",
            postal_address="1 Way",
            relays=[
                Relay(name="listed", host="127.0.0.1", port=listed.port, tls="none"),
                Relay(name="clean", host="127.0.0.1", port=clean.port, tls="none"),
            ],
        )
        csv = "email\n" + "".join(f"{a}\n" for a in addresses)
        uid = uuid.uuid4()
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, "l", csv.encode(), KEY)
            await upsert_campaign(conn, uid=uid, namespace="ns", name="c", plan=plan)
            await enqueue(conn, uid, ["l"])
            await set_sending(conn, uid, True)
        config = SenderConfig(
            tenant_id=tenant_id,
            token_key=KEYS.token_key(tenant_id),
            poll_interval=0.05,
            concurrency=CONCURRENCY,
        )
        await Sender(db_pool, config, secrets=DirSecrets(tmp_path)).run_until_idle()
        blocked = len(listed.refused)
        carried = len(clean.messages)
    async with tenant_connection(db_pool, tenant_id) as conn:
        counts = await campaign_counts(conn, uid)
        assert await get_pause_reason(conn, uid) is None
        assert await conn.fetchval("SELECT sending FROM campaigns WHERE uid = $1", uid)
        suppressed = [a for a in addresses if await is_suppressed(conn, address_hash(KEY, a))]
    print(f"blocked by the listed server: {blocked}; carried by the clean one: {carried}")
    # Strikes stop new messages going to the listed server; those already on their way to it
    # (at most the other in-flight ones) still get there.
    assert BLOCK_STRIKES <= blocked <= BLOCK_STRIKES + CONCURRENCY - 1
    assert counts["failed"] == blocked and counts["sent"] == carried == CONTACTS - blocked
    assert suppressed == []
