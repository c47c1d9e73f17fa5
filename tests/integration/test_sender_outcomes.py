"""What the sender does with each kind of relay reply, against a recipient server that answers
4xx, 5.1.1, 5.7.1, a bare 550 and 5.7.26 for chosen addresses (no relay in between, so the
sender sees them)."""

from __future__ import annotations

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
    get_pause_reason,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import address_hash, is_suppressed
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.engine import Sender, SenderConfig
from penguinmails.sender.retry import RetrySchedule
from penguinmails.sender.secrets import DirSecrets
from tests.integration.sender_support import dkim_folder, tenant_row

pytestmark = pytest.mark.integration

KEY = b"outcomes-test-key"
KEYS = MasterKeys.parse("outcomes-platform-master-key")


async def test_retry_bounce_and_authentication_failure(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    name = f"out-{uuid.uuid4().hex[:6]}"
    tenant_id = await tenant_row(db_pool, name)
    dkim_folder(tmp_path / "d-dkim", "rsa1", "rsa2048")
    with SinkServer() as sink:
        sink.set_reply_once("slow@dest.test", 451, "4.3.2 try later", count=2)
        sink.reply_for["gone@dest.test"] = (550, "5.1.1 no such user")
        # Issue 10: neither a recipient-specific 5.7.1 nor a bare 550 may suppress the
        # address or pause the campaign.
        sink.reply_for["denied@dest.test"] = (550, "5.7.1 Recipient address rejected")
        sink.reply_for["blocked@dest.test"] = (550, "blocked")
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
        )
        csv = (
            "email,first_name\nok@dest.test,Ok\nslow@dest.test,Slow\ngone@dest.test,Gone\n"
            "nofield@dest.test,\ndenied@dest.test,D\nblocked@dest.test,B\n"
        )
        uid = uuid.uuid4()
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, "l", csv.encode(), KEY)
            await conn.execute(
                "UPDATE contacts SET fields = '{}' WHERE email = 'nofield@dest.test'"
            )
            await upsert_campaign(conn, uid=uid, namespace="ns", name="c", plan=plan)
            await enqueue(conn, uid, ["l"])
            await set_sending(conn, uid, True)
        config = SenderConfig(
            tenant_id=tenant_id,
            token_key=KEYS.token_key(tenant_id),
            retry=RetrySchedule(base=0.2, maximum=0.2, lifetime=60),
            poll_interval=0.05,
        )
        await Sender(db_pool, config, secrets=DirSecrets(tmp_path)).run_until_idle(idle_rounds=20)

        async with tenant_connection(db_pool, tenant_id) as conn:
            rows = {
                r["email"]: r
                for r in await conn.fetch(
                    "SELECT c.email, d.state, d.attempts, d.reason, d.last_status"
                    " FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
                )
            }
            # 4xx twice, then accepted on the third attempt.
            assert rows["slow@dest.test"]["state"] == "sent"
            assert rows["slow@dest.test"]["attempts"] == 3
            # 5.1.1: bounced and suppressed.
            assert rows["gone@dest.test"]["state"] == "bounced"
            assert rows["gone@dest.test"]["last_status"] == "5.1.1"
            assert await is_suppressed(conn, address_hash(KEY, "gone@dest.test"))
            # A missing template field fails that delivery only, naming the field.
            assert rows["nofield@dest.test"]["state"] == "failed"
            assert "first_name" in rows["nofield@dest.test"]["reason"]
            assert rows["ok@dest.test"]["state"] == "sent"
            for address in ("denied@dest.test", "blocked@dest.test"):
                assert rows[address]["state"] == "failed"
                assert rows[address]["attempts"] == 1
                assert not await is_suppressed(conn, address_hash(KEY, address))
            assert rows["denied@dest.test"]["last_status"] == "5.7.1"
            assert await get_pause_reason(conn, uid) is None
            assert await conn.fetchval("SELECT sending FROM campaigns WHERE uid = $1", uid)
            counts = await campaign_counts(conn, uid)
        assert counts["sent"] == 2 and counts["bounced"] == 1 and counts["failed"] == 3
        assert sorted(r for m in sink.messages for r in m.rcpt_tos) == [
            "ok@dest.test",
            "slow@dest.test",
        ]

        # 5.7.26 (DMARC/authentication): the campaign pauses; the recipient is not suppressed.
        sink.reply_for["strict@dest.test"] = (550, "5.7.26 unauthenticated mail is prohibited")
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, "l", b"email,first_name\nstrict@dest.test,S\n", KEY)
            uid2 = uuid.uuid4()
            await upsert_campaign(conn, uid=uid2, namespace="ns", name="c2", plan=plan)
            await enqueue(conn, uid2, ["l"])
            await set_sending(conn, uid2, True)
        await Sender(db_pool, config, secrets=DirSecrets(tmp_path)).run_until_idle()
        async with tenant_connection(db_pool, tenant_id) as conn:
            reason = await get_pause_reason(conn, uid2)
            assert reason is not None and "5.7.26" in reason
            assert not await conn.fetchval("SELECT sending FROM campaigns WHERE uid = $1", uid2)
            assert not await is_suppressed(conn, address_hash(KEY, "strict@dest.test"))
            state = await conn.fetchval(
                "SELECT d.state FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
                " WHERE d.campaign_uid = $1 AND c.email = 'strict@dest.test'",
                uid2,
            )
            assert state == "deferred"
