"""Invitation e-mails through the API running as its own process and the platform's relay: a
real Postfix (STARTTLS, verified against its certificate given as PM_NOTICE_SMTP_CA) relaying
to a recipient sink. The invitee gets a link carrying the token; the inviter does not see it;
the database keeps only its hash once the e-mail is out. An e-mail the relay could not take
(relay down) stays owed and is sent by a later API process with the same Message-ID.
Without a relay the answer says so and shows the token (test_api_members.py)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.common.db.accounts import Role
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    make_tenant,
    make_user,
    sign_in,
    start_api,
    stop_api,
)
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig"]  # fixtures used by name

MASTER_KEY = "invitation-master-key-0123456789abcdef"
ACCEPT_URL = "https://app.penguinmails.test/accept-invitation"
FROM = "PenguinMails <invitations@penguinmails.test>"
NEW_PASSWORD = "a brand new passphrase"
TOKEN = re.compile(r"#token=(pm_inv_[A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def mail(services_dir: Path) -> Iterator[tuple[SinkServer, PostfixServer]]:
    """The platform's relay (Postfix) and the mailboxes behind it (a sink)."""
    with (
        SinkServer() as sink,
        PostfixServer(
            services_dir, relayhost=sink.address, tls=True, hostname="localhost", name="invites"
        ) as relay,
    ):
        yield sink, relay


def relay_env(relay: PostfixServer, port: int | None = None) -> dict[str, str]:
    """Production's defaults (STARTTLS required, certificate verified) but for the relay's
    address and its self-signed certificate as the trusted CA."""
    assert relay.tls_cert is not None
    return {
        "PM_NOTICE_SMTP_HOST": "localhost",
        "PM_NOTICE_SMTP_PORT": str(port or relay.port),
        "PM_NOTICE_SMTP_CA": relay.tls_cert.read_text(),
        "PM_API_INVITATION_FROM": FROM,
        "PM_API_INVITATION_URL": ACCEPT_URL,
        "PM_SUPPRESSION_KEY": MASTER_KEY,
    }


def started(
    tmp_path_factory: pytest.TempPathFactory,
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    env: dict[str, str],
) -> tuple[Any, ApiServer]:
    return start_api(
        tmp_path_factory.mktemp("api-invites"),
        database_url=api_database_url,
        redis_url=redis_url,
        kubeconfig=api_kubeconfig,
        **env,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(db_pool: asyncpg.Pool, core: client.CoreV1Api) -> TenantSetup:
    return await make_tenant(db_pool, core, "apiinvites")


def mails_to(sink: SinkServer, address: str) -> list[EmailMessage]:
    found = []
    for stored in sink.messages:
        if address in stored.rcpt_tos:
            parsed = email.message_from_bytes(stored.data, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
    return found


async def arrived(sink: SinkServer, address: str) -> EmailMessage:
    await asyncio.to_thread(
        wait_for, lambda: mails_to(sink, address), timeout=120, what=f"mail to {address}"
    )
    (message,) = mails_to(sink, address)
    return message


def link_token(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert f"{ACCEPT_URL}#token=" in text, text
    found = TOKEN.search(text)
    assert found is not None, text
    return found.group(1)


async def invite(api: ApiServer, owner: str, tenant: TenantSetup, address: str) -> Any:
    token = (await sign_in(api, owner))["accessToken"]
    async with api.client(token) as http:
        made = await http.post(
            f"/v1/tenants/{tenant.name}/invitations", json={"email": address, "role": "member"}
        )
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    return made.json()


async def outbox(db: asyncpg.Pool, invitation_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT e.*, i.token_hash FROM invitation_emails e "
        "JOIN invitations i ON i.id = e.invitation_id WHERE e.invitation_id = $1",
        invitation_id,
    )
    assert row is not None
    return row


async def recorded_sent(db: asyncpg.Pool, invitation_id: str) -> asyncpg.Record:
    """The outbox row once the API has recorded the relay's acceptance."""
    deadline = asyncio.get_running_loop().time() + 30
    while (row := await outbox(db, invitation_id))["sent_at"] is None:
        assert asyncio.get_running_loop().time() < deadline, f"never recorded as sent: {dict(row)}"
        await asyncio.sleep(0.1)
    return row


async def accept(api: ApiServer, token: str) -> Any:
    async with api.client() as anonymous:
        accepted = await anonymous.post(
            "/v1/invitations/accept", json={"token": token, "password": NEW_PASSWORD}
        )
    assert accepted.status_code == 200, accepted.text
    return accepted.json()


async def test_the_invitee_gets_a_link_and_the_inviter_never_the_token(
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    db_pool: asyncpg.Pool,
    tenant: TenantSetup,
    mail: tuple[SinkServer, PostfixServer],
) -> None:
    sink, relay = mail
    process, api = started(
        tmp_path_factory, api_kubeconfig, api_database_url, redis_url, relay_env(relay)
    )
    try:
        owner = await make_user(db_pool, tenant, Role.OWNER)
        made = await invite(api, owner, tenant, "Invitee.Sent@Example.com")
        assert made["emailDelivery"]["status"] == "sent", made
        assert made.get("token") is None
        message = await arrived(sink, "Invitee.Sent@Example.com")
        token = link_token(message)
        assert str(message["Message-ID"]).strip() == made["emailDelivery"]["messageId"]
        assert str(message["From"]) == FROM and tenant.name in str(message["Subject"])
        row = await outbox(db_pool, made["id"])
        # Out: only the hash is left, and the one attempt is recorded.
        assert row["sent_at"] is not None and row["token_sealed"] is None
        assert row["attempts"] == 1 and row["message_id"] == made["emailDelivery"]["messageId"]
        assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
        accepted = await accept(api, token)
        assert accepted["tenant"] == tenant.name and accepted["newUser"] is True
        assert token not in api.log()
    finally:
        stop_api(process)


async def test_an_email_the_relay_could_not_take_is_sent_later_with_the_same_message_id(
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    db_pool: asyncpg.Pool,
    tenant: TenantSetup,
    mail: tuple[SinkServer, PostfixServer],
) -> None:
    sink, relay = mail
    # The relay down: nothing listens where the API is told it is.
    down = relay_env(relay, port=free_port())
    process, api = started(tmp_path_factory, api_kubeconfig, api_database_url, redis_url, down)
    try:
        owner = await make_user(db_pool, tenant, Role.OWNER)
        made = await invite(api, owner, tenant, "invitee.later@example.com")
    finally:
        stop_api(process)
    assert made["emailDelivery"]["status"] == "pending", made
    assert made.get("token") is None
    owed = await outbox(db_pool, made["id"])
    assert owed["sent_at"] is None and owed["error"] is None
    assert owed["token_sealed"] is not None and owed["attempts"] == 1
    assert not mails_to(sink, "invitee.later@example.com")

    # Another API process, the relay reachable: its pass at start sends what is owed.
    process, api = started(
        tmp_path_factory, api_kubeconfig, api_database_url, redis_url, relay_env(relay)
    )
    try:
        message = await arrived(sink, "invitee.later@example.com")
        assert str(message["Message-ID"]).strip() == owed["message_id"]
        # Postfix may hand the message on before the API has recorded the 250 it was given.
        sent = await recorded_sent(db_pool, made["id"])
        assert sent["token_sealed"] is None
        assert sent["attempts"] == 2
        token = link_token(message)
        assert (await accept(api, token))["tenant"] == tenant.name
        assert token not in api.log()
    finally:
        stop_api(process)
    assert len(mails_to(sink, "invitee.later@example.com")) == 1
