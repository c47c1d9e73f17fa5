"""A customer's hostile template, through the real sender process: the campaign is paused with
a `SenderFault` reason naming the template field and the limit, no attempt is used, and the same
process keeps sending the tenant's other campaign (no MemoryError, no hang, no crash).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CAMPAIGN_FAULT,
    CampaignPlan,
    Relay,
    enqueue,
    get_pause_reason,
    set_sending,
    upsert_campaign,
)
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.render import MAX_OUTPUT_CHARS, RENDER_SECONDS
from tests.integration.sender_support import tenant_row
from tests.integration.test_sender_semantics import (
    KEY,
    rows,
    start_sender,
    stop,
    until,
    write_dkim,
)

pytestmark = pytest.mark.integration


def plan(sink: SinkServer, text: str) -> CampaignPlan:
    return CampaignPlan(
        from_address="jane@sender.example",
        subject="Hi {{ first_name }}",
        text=text,
        domain="sender.example",
        dkim_secret="d-dkim",
        unsubscribe_url="https://u.example/u",
        unsubscribe_mailto="unsubscribe@sender.example",
        postal_address="1 Way",
        relays=[Relay(name="sink", host="127.0.0.1", port=sink.port, tls="none")],
        per_mailbox_per_day=100_000,
    )


HOSTILE = [
    # 10**9 characters: without the limits, a gigabyte per message (or per compile: Jinja2
    # folds constant expressions when it compiles).
    pytest.param(
        "{{ 'x' * 10**9 }}",
        f"output limit of {MAX_OUTPUT_CHARS} characters",
        id="size",
    ),
    # 10**10 iterations and no output: without the limits, a sender that never runs again.
    pytest.param(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        f"rendering takes longer than the limit of {RENDER_SECONDS:g} s",
        id="time",
    ),
]


@pytest.mark.parametrize(("hostile_text", "limit"), HOSTILE)
async def test_hostile_template_pauses_its_campaign_and_the_sender_keeps_sending(
    db_pool: asyncpg.Pool, postgres_dsn: str, tmp_path: Path, hostile_text: str, limit: str
) -> None:
    name = f"tpl-{uuid.uuid4().hex[:6]}"
    tenant_id = await tenant_row(db_pool, name)
    hostile_to = [f"h{i}@dest.test" for i in range(5)]
    good_to = [f"g{i}@dest.test" for i in range(5)]
    hostile, good = uuid.uuid4(), uuid.uuid4()
    write_dkim(tmp_path, "d-dkim")
    with SinkServer() as sink:
        async with tenant_connection(db_pool, tenant_id) as conn:
            for list_name, addresses in (("hostile", hostile_to), ("good", good_to)):
                csv = "email,first_name\n" + "".join(f"{a},X\n" for a in addresses)
                await import_contacts(conn, list_name, csv.encode(), KEY)
            for uid, list_name, text in (
                (hostile, "hostile", "Hello {{ first_name }} " + hostile_text),
                (good, "good", "Hello {{ first_name }}"),
            ):
                await upsert_campaign(
                    conn, uid=uid, namespace="ns", name=list_name, plan=plan(sink, text)
                )
                await enqueue(conn, uid, [list_name])
                await set_sending(conn, uid, True)
        sender = start_sender(name, tenant_id, postgres_dsn, tmp_path, PM_SENDER_CONCURRENCY="4")
        try:

            async def settled() -> bool:
                found = await rows(db_pool, tenant_id)
                async with tenant_connection(db_pool, tenant_id) as conn:
                    paused = await get_pause_reason(conn, hostile) is not None
                return paused and all(found[a]["state"] == "sent" for a in good_to)

            await until(settled, "the hostile campaign paused and the good one sent")
            assert sender.poll() is None  # still running
        finally:
            stderr = stop(sender)
        async with tenant_connection(db_pool, tenant_id) as conn:
            reason = await get_pause_reason(conn, hostile)
            sending = await conn.fetchval("SELECT sending FROM campaigns WHERE uid = $1", hostile)
        assert reason is not None and reason.startswith(CAMPAIGN_FAULT), stderr[-2000:]
        assert "template field 'text'" in reason
        assert limit in reason
        assert not sending
        found = await rows(db_pool, tenant_id)
        assert all(found[a]["attempts"] == 0 for a in hostile_to)
        assert {found[a]["state"] for a in hostile_to} <= {"queued", "sending"}
        assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(good_to)
        assert "MemoryError" not in stderr and "Traceback" not in stderr, stderr[-2000:]
