"""Setup shared by the tests that run the sender program without the operator: a tenant's row as
the operator writes it, a DKIM key in a folder laid out like the mounted Secret, the sender as its
own process, a campaign's plan, and receivers' reports (DSNs) sent back to the intake."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import asyncpg
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.common.db.ledger import CampaignPlan, Relay
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.devstack.sink import StoredMessage
from tests.reports import build_dsn


async def tenant_row(pool: asyncpg.Pool, name: str, tier: str = "starter") -> uuid.UUID:
    """The tenant's row as the operator writes it (namespace tenant-<name>)."""
    return await upsert_tenant(
        pool,
        name=name,
        tier=tier,
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )


def dkim_folder(folder: Path, selector: str, algorithm: str) -> DkimKey:
    """A fresh active key written into `folder` as the sender sees its mounted DKIM Secret."""
    folder.mkdir()
    key = DkimKey(
        selector, algorithm, KeyState.ACTIVE, datetime.now(UTC), generate_private_key(algorithm)
    )
    for item, value in secret_data(KeySet((key,))).items():
        (folder / item).write_bytes(base64.b64decode(value))
    return key


def plan(domain: str, relays: list[Relay]) -> CampaignPlan:
    """A plain campaign from jane@`domain` through `relays` (its DKIM Secret named after the
    domain's first label)."""
    return CampaignPlan(
        from_address=f"jane@{domain}",
        subject="Quick question",
        text="Hello",
        domain=domain,
        dkim_secret=f"{domain.partition('.')[0]}-dkim",
        unsubscribe_url="https://u.example/u",
        unsubscribe_mailto=f"unsubscribe@{domain}",
        postal_address="1 Way",
        relays=relays,
    )


def start_sender(
    tenant: str, database_url: str, token_key: str, secrets: Path
) -> subprocess.Popen[bytes]:
    """The sender program as its own process, without Redis (no throttles), polling often."""
    env = {
        **os.environ,
        "PM_TENANT": tenant,
        "PM_DATABASE_URL": database_url,
        "PM_TOKEN_KEY": token_key,
        "PM_SECRETS_DIR": str(secrets),
        "PM_POLL_SECONDS": "0.1",
        "PM_METRICS_PORT": "0",
        "PM_EGRESS_ALLOW": "127.0.0.0/8",  # the relays are local sinks
    }
    env.pop("PM_REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_sender(sender: subprocess.Popen[bytes]) -> str:
    """SIGTERM (it finishes what is in flight, records it and exits 0); its log."""
    sender.send_signal(signal.SIGTERM)
    _, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err.decode()
    return err.decode()


def as_stored(message: StoredMessage) -> bytes:
    """The message as the receiver stored it: its MTA adds the envelope sender as Return-Path."""
    return f"Return-Path: <{message.mail_from}>\r\n".encode() + message.data


def dsn_for(message: StoredMessage, status: str, diagnostic: str) -> bytes:
    """The receiver's delivery status notification for `message`, to its return path."""
    return build_dsn(
        status,
        diagnostic,
        recipient=message.rcpt_tos[0],
        original=as_stored(message),
        to=message.mail_from,
    )


async def report(port: int, to: str, raw: bytes) -> None:
    """Send as reporting MTAs do: null reverse-path (`MAIL FROM:<>`, RFC 3464 section 2)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
        await smtp.mail("")
        await smtp.rcpt(to)
        await smtp.data(raw)


def platform_sender_secret(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    *,
    database_url: str,
    redis_url: str,
    suppression_key: str,
) -> str:
    """The platform's sender Secret (what PM_SENDER_SECRET names; the operator puts each
    tenant's own logins in its copy), made afresh; its `namespace/name` reference."""
    try:
        core.create_namespace({"metadata": {"name": namespace}})
    except ApiException as error:
        if error.status != 409:
            raise
    try:
        core.delete_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": name},
            "stringData": {
                "PM_DATABASE_URL": database_url,
                "PM_REDIS_URL": redis_url,
                "PM_SUPPRESSION_KEY": suppression_key,
            },
        },
    )
    return f"{namespace}/{name}"
