"""A platform key rotation in the middle of a campaign, with the real sender program.

The sender (the tenant's own database login, the token key the operator would derive) sends the
first half of a campaign under key id 1. The platform then rotates: key id 2 becomes current,
key id 1 stays in the ring. The sender, restarted with its new token key, sends the rest. Old
tokens still unsubscribe, new mail carries key id 2, and the suppression list still matches
(its hash key does not change with the rotation).
"""

from __future__ import annotations

import asyncio
import base64
import email
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from penguinmails.api.unsubscribe import make_app
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
from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import TokenPurpose, address_hash, is_suppressed, read_token
from penguinmails.devstack.sink import SinkServer, StoredMessage
from tests.integration.sender_support import tenant_row

pytestmark = pytest.mark.integration

OLD_RING = "1:" + "o" * 40
NEW_RING = "2:" + "n" * 40 + "," + OLD_RING
HALF = 6
DOMAIN = "rotate.example"


def sender_process(dsn: str, tenant: str, token_key: str, secrets: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PM_TENANT": tenant,
        "PM_DATABASE_URL": dsn,
        "PM_TOKEN_KEY": token_key,
        "PM_SECRETS_DIR": str(secrets),
        "PM_POLL_SECONDS": "0.1",
        "PM_METRICS_PORT": "0",
    }
    env.pop("PM_REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"], env=env, stderr=subprocess.PIPE
    )


async def send_until(
    sender: subprocess.Popen[bytes],
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    uid: uuid.UUID,
    sent: int,
) -> None:
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with tenant_connection(pool, tenant_id) as conn:
                if (await campaign_counts(conn, uid))["sent"] >= sent:
                    return
            assert sender.poll() is None, sender.stderr.read().decode() if sender.stderr else ""
            await asyncio.sleep(0.2)
        raise AssertionError(f"fewer than {sent} messages sent within 120 s")
    finally:
        sender.send_signal(signal.SIGTERM)
        assert sender.wait(30) == 0, sender.stderr.read().decode() if sender.stderr else ""


def token_of(message: StoredMessage) -> str:
    parsed = email.message_from_bytes(message.data)
    url = parsed["List-Unsubscribe"].split("<", 1)[1].split(">", 1)[0]
    return url.rsplit("/", 1)[1]


def key_id(token: str) -> int:
    return base64.b32decode(token.upper())[0]


async def test_rotation_mid_campaign_keeps_old_tokens_and_suppression(
    db_pool: asyncpg.Pool, postgres_dsn: str, tmp_path: Path
) -> None:
    old, new = MasterKeys.parse(OLD_RING), MasterKeys.parse(NEW_RING)
    hash_key = old.suppression_key()
    name = f"rot-{uuid.uuid4().hex[:8]}"
    tenant_id = await tenant_row(db_pool, name)
    password = new_password()
    dsn = with_login(
        postgres_dsn, await ensure_tenant_login(db_pool, tenant_id, password), password
    )
    key = DkimKey(
        "ed1", "ed25519", KeyState.ACTIVE, datetime.now(UTC), generate_private_key("ed25519")
    )
    folder = tmp_path / "secrets" / "rotate-dkim"
    folder.mkdir(parents=True)
    for item, value in secret_data(KeySet((key,))).items():
        (folder / item).write_bytes(base64.b64decode(value))

    with SinkServer() as sink:
        plan = CampaignPlan(
            from_address=f"jane@{DOMAIN}",
            subject="Hello {{ first_name }}",
            text="Hi {{ first_name }}",
            domain=DOMAIN,
            dkim_secret="rotate-dkim",
            unsubscribe_url="https://unsubscribe.penguinmails.test/u",
            unsubscribe_mailto=f"unsubscribe@{DOMAIN}",
            postal_address="1 Penguin Way",
            relays=[Relay(name="sink", host="127.0.0.1", port=sink.port, tls="none")],
            per_mailbox_per_day=1000,
        )
        uid = uuid.uuid4()
        first = "".join(f"a{i}@dest.test,A{i}\n" for i in range(HALF))
        second = "".join(f"b{i}@dest.test,B{i}\n" for i in range(HALF))
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, "first", f"email,first_name\n{first}".encode(), hash_key)
            await upsert_campaign(conn, uid=uid, namespace=f"tenant-{name}", name="c", plan=plan)
            assert await enqueue(conn, uid, ["first"]) == HALF
            await set_sending(conn, uid, True)
        secrets = tmp_path / "secrets"
        await send_until(
            sender_process(dsn, name, old.token_key(tenant_id).encode(), secrets),
            db_pool,
            tenant_id,
            uid,
            HALF,
        )
        # The rotation: what the operator writes into the tenant's Secret after the ring changed.
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, "second", f"email,first_name\n{second}".encode(), hash_key)
            assert await enqueue(conn, uid, ["first", "second"]) == HALF
        await send_until(
            sender_process(dsn, name, new.token_key(tenant_id).encode(), secrets),
            db_pool,
            tenant_id,
            uid,
            2 * HALF,
        )
        messages = list(sink.messages)

    by_rcpt = {message.rcpt_tos[0]: token_of(message) for message in messages}
    assert len(by_rcpt) == 2 * HALF
    assert {key_id(t) for r, t in by_rcpt.items() if r.startswith("a")} == {1}
    assert {key_id(t) for r, t in by_rcpt.items() if r.startswith("b")} == {2}  # new mail

    # The platform now holds the new ring: old and new tokens both unsubscribe.
    old_rcpt, new_rcpt = "a0@dest.test", "b0@dest.test"
    assert read_token(new, TokenPurpose.UNSUBSCRIBE, by_rcpt[old_rcpt]) is not None
    app = make_app(db_pool, new)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://u.test"
    ) as http:
        for rcpt in (old_rcpt, new_rcpt):
            response = await http.post(
                f"/u/{by_rcpt[rcpt]}", data={"List-Unsubscribe": "One-Click"}
            )
            assert response.status_code == 200, rcpt
    # ... and the suppression list matches with the (unchanged) hash key of the new ring.
    assert new.suppression_key() == hash_key
    async with tenant_connection(db_pool, tenant_id) as conn:
        for rcpt in (old_rcpt, new_rcpt):
            assert await is_suppressed(conn, address_hash(new.suppression_key(), rcpt))
        assert not await is_suppressed(conn, address_hash(hash_key, "a1@dest.test"))
        again = uuid.uuid4()
        await upsert_campaign(conn, uid=again, namespace=f"tenant-{name}", name="again", plan=plan)
        assert await enqueue(conn, again, ["first", "second"]) == 2 * HALF - 2
    # A token of a key id dropped from the ring no longer works.
    dropped = MasterKeys.parse(NEW_RING.split(",")[0])
    assert read_token(dropped, TokenPurpose.UNSUBSCRIBE, by_rcpt["a1@dest.test"]) is None
