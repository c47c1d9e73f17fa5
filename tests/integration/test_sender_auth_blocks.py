"""Authentication failures (DKIM/SPF/DMARC: Gmail's 5.7.26, Microsoft's 5.7.515) count against
the sending domain, for every campaign sending from it, not only against the one campaign
whose message was refused (issue 10).

Through the real sender process (the tenant's own database login) and the real intake: a relay
that refuses a domain's mail with 5.7.26 itself (each refusal a strike against that domain,
recorded for the other pods and the intake), then three 5.7.26 DSNs at the intake for
messages of another domain that a relay had accepted: that domain's next campaign (a
different one, never refused itself) waits without using attempts, while a campaign of a
third domain on the same relay sends. Nobody is suppressed.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    Relay,
    enqueue,
    get_pause_reason,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import address_hash, is_suppressed
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.engine import BLOCK_STRIKES
from penguinmails.sender.intake import IntakeHandler, IntakeResult, intake_server
from tests.integration.sender_support import (
    dsn_for,
    plan,
    report,
    start_sender,
    stop_sender,
    tenant_row,
)

pytestmark = pytest.mark.integration

KEY = b"auth-blocks-test-key"
KEYS = MasterKeys.parse("auth-blocks-platform-master-key")
GMAIL_5_7_26 = (
    "550-5.7.26 This mail has been blocked because the sender is unauthenticated. "
    "550 5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp"
)
DOMAINS = ("dsn.example", "relayed.example", "clean.example")


async def test_authentication_failures_block_the_sending_domain_for_every_campaign(
    db_pool: asyncpg.Pool, postgres_dsn: str, tmp_path: Path
) -> None:
    name = f"authb-{uuid.uuid4().hex[:6]}"
    tenant_id = await tenant_row(db_pool, name)
    for domain in DOMAINS:
        folder = tmp_path / f"{domain.partition('.')[0]}-dkim"
        folder.mkdir()
        key = DkimKey(
            "ed1", "ed25519", KeyState.ACTIVE, datetime.now(UTC), generate_private_key("ed25519")
        )
        for item, value in secret_data(KeySet((key,))).items():
            (folder / item).write_bytes(base64.b64decode(value))
    # The tenant's own login, as the operator issues it to the sender.
    password = new_password()
    role = await ensure_tenant_login(db_pool, tenant_id, password)
    sender_dsn = with_login(postgres_dsn, role, password)

    async def campaign(list_name: str, count: int, plan: CampaignPlan) -> uuid.UUID:
        csv = "email\n" + "".join(f"{list_name}-{i}@dest.test\n" for i in range(count))
        uid = uuid.uuid4()
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, list_name, csv.encode(), KEY)
            await upsert_campaign(conn, uid=uid, namespace="ns", name=list_name, plan=plan)
            await enqueue(conn, uid, [list_name])
            await set_sending(conn, uid, True)
        return uid

    async def rows(uid: uuid.UUID) -> dict[str, asyncpg.Record]:
        async with tenant_connection(db_pool, tenant_id) as conn:
            found = await conn.fetch(
                "SELECT c.email, d.state, d.attempts, d.reason"
                " FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
                " WHERE d.campaign_uid = $1",
                uid,
            )
        return {r["email"]: r for r in found}

    async def blocks() -> list[tuple[str, str, str]]:
        async with tenant_connection(db_pool, tenant_id) as conn:
            found = await conn.fetch("SELECT scope, target, source FROM sending_blocks")
        return sorted((r["scope"], r["target"], r["source"]) for r in found)

    async def until(
        sender: subprocess.Popen[bytes], done: Callable[[], Awaitable[bool]], what: str
    ) -> None:
        """Poll `done` while the sender runs (a sender that exits fails at once, with its log);
        the bound is only a guard against a hang."""
        for _ in range(1200):
            if await done():
                return
            if sender.poll() is not None:
                raise AssertionError(f"the sender exited: {sender.communicate()[1].decode()}")
            await asyncio.sleep(0.25)
        raise AssertionError(f"never reached: {what}")

    with SinkServer() as relay:
        via = Relay(name="srv", host="127.0.0.1", port=relay.port, tls="none")
        # This relay's receiver refuses relayed.example's mail: the domain fails DMARC.
        for i in range(4):
            relay.reply_for[f"relayed-{i}@dest.test"] = (550, GMAIL_5_7_26)
        first = await campaign("first", 6, plan("dsn.example", [via]))
        relayed = await campaign("relayed", 4, plan("relayed.example", [via]))

        async def first_round_done() -> bool:
            states = [r["state"] for r in (await rows(relayed)).values()]
            return (
                {r["state"] for r in (await rows(first)).values()} == {"sent"}
                and "sending" not in states
                and len(await blocks()) == len(relay.refused)
            )

        sender = start_sender(name, sender_dsn, KEYS.token_key(tenant_id).encode(), tmp_path)
        try:
            await until(sender, first_round_done, "first campaign sent, the refusals recorded")
        finally:
            stop_sender(sender)
        # Each 5.7.26 from the relay: a strike against the domain, recorded for every pod
        # (and its campaign paused, as before).
        refused = len(relay.refused)
        print(f"\nrelay refused {refused} of relayed.example's messages with 5.7.26")
        assert refused >= 1
        assert await blocks() == [("domain", "relayed.example", "relay")] * refused
        async with tenant_connection(db_pool, tenant_id) as conn:
            assert "5.7.26" in (await get_pause_reason(conn, relayed) or "")

        # Receivers report three of dsn.example's accepted messages as failing DMARC.
        handler = IntakeHandler(postgres_dsn, KEYS, ())
        server = intake_server(handler, "127.0.0.1", free_port())
        server.start()
        try:
            for message in relay.messages[:BLOCK_STRIKES]:
                raw = dsn_for(message, "5.7.26", GMAIL_5_7_26)
                await report(server.port, message.mail_from, raw)
        finally:
            server.stop()
        assert handler.results == [IntakeResult.BOUNCED] * BLOCK_STRIKES
        assert (await blocks()).count(("domain", "dsn.example", "dsn")) == BLOCK_STRIKES

        # That domain's next campaign (never refused itself) waits, no attempt used; another
        # domain's campaign on the same relay sends.
        before = len(relay.messages)
        second = await campaign("second", 5, plan("dsn.example", [via]))
        other = await campaign("other", 5, plan("clean.example", [via]))

        async def second_round_done() -> bool:
            waiting = (await rows(second)).values()
            return {r["state"] for r in (await rows(other)).values()} == {"sent"} and all(
                r["state"] == "queued" and "dsn.example is blocked" in (r["reason"] or "")
                for r in waiting
            )

        sender = start_sender(name, sender_dsn, KEYS.token_key(tenant_id).encode(), tmp_path)
        try:
            await until(
                sender, second_round_done, "other campaign sent, the blocked domain's waiting"
            )
        finally:
            stop_sender(sender)
        carried = {m.rcpt_tos[0].partition("-")[0] for m in relay.messages[before:]}
        assert carried == {"other"}
        assert {(r["state"], r["attempts"]) for r in (await rows(second)).values()} == {
            ("queued", 0)
        }

    async with tenant_connection(db_pool, tenant_id) as conn:
        # Nobody is suppressed: the failure is the domain's, not the recipients'.
        for message in relay.messages:
            assert not await is_suppressed(conn, address_hash(KEY, message.rcpt_tos[0]))
        # Only the campaign whose own message the relay refused is paused.
        assert await get_pause_reason(conn, second) is None
        assert await get_pause_reason(conn, other) is None
