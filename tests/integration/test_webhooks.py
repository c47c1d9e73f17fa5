"""Outbound webhooks against a real HTTP receiver on loopback and the real PostgreSQL.

The receiver (aiohttp) verifies every request with the Standard Webhooks reference library
(`standardwebhooks`), independently of our signer, and answers 503 with a large body to its
first N requests. Loopback is allowed the way the other tests allow it (`PM_EGRESS_ALLOW`);
without that setting the same endpoint is refused, as in production.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context, list_entries
from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy
from penguinmails.common.webhook_dispatch import (
    DEFAULT_RETRY_SCHEDULE,
    RESPONSE_LIMIT,
    Dispatcher,
    RetrySchedule,
)
from penguinmails.common.webhooks import (
    EventType,
    WebhookError,
    create_endpoint,
    delete_endpoint,
    delivery_log,
    emit,
    list_endpoints,
    redeliver,
    rotate_secret,
    update_endpoint,
)

pytestmark = pytest.mark.integration

ADMIN = Context("user:admin", "198.51.100.7", "req_hooks")
FAILURE_BODY = "upstream unavailable " * 300  # longer than what the log keeps


@dataclass
class Receiver:
    """A webhook receiver: verifies each request, fails the first `fail_first` verified ones."""

    fail_first: int = 0
    secret: str = ""
    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    refused_signatures: int = 0
    more_secrets: list[str] = field(default_factory=list)
    """Secrets of other endpoints posting to the same receiver."""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        for secret in (self.secret, *self.more_secrets):
            try:
                Webhook(secret).verify(body, headers)
                break
            except WebhookVerificationError:
                continue
        else:
            self.refused_signatures += 1
            return web.Response(status=401, text="bad signature")
        self.received.append((headers, body))
        if len(self.received) <= self.fail_first:
            return web.Response(status=503, text=FAILURE_BODY)
        return web.Response(status=200, text="ok")

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """What was received, as (webhook-id, payload) pairs."""
        return [(headers["webhook-id"], json.loads(body)) for headers, body in self.received]


@asynccontextmanager
async def serving(hook: Receiver) -> AsyncIterator[Receiver]:
    """`hook` answering on a free loopback port, its `url` set to an endpoint path under it."""
    app = web.Application()
    app.router.add_post("/hooks/{name}", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    hook.url = f"http://{host}:{port}/hooks/penguin"
    try:
        yield hook
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as hook:
        yield hook


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> EgressPolicy:
    # Every test server is on loopback, which tenants may not use in production.
    monkeypatch.setenv("PM_EGRESS_ALLOW", "127.0.0.0/8")
    return EgressPolicy.from_env()


async def new_tenant(pool: asyncpg.Pool) -> uuid.UUID:
    name = f"hooks-{uuid.uuid4().hex[:8]}"
    return await upsert_tenant(
        pool,
        name=name,
        tier="starter",
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )


async def drain(dispatcher: Dispatcher, tenant: uuid.UUID, rounds: int = 20) -> int:
    """Dispatch until nothing is due any more; returns the attempts made."""
    made = 0
    for _ in range(rounds):
        done = await dispatcher.deliver_due(tenant)
        if done == 0:
            return made
        made += done
    raise AssertionError(f"still delivering after {rounds} rounds")


async def test_signed_event_is_retried_with_backoff_until_the_receiver_takes_it(
    db_pool: asyncpg.Pool, receiver: Receiver, loopback_allowed: EgressPolicy
) -> None:
    tenant = await new_tenant(db_pool)
    receiver.fail_first = 2
    async with tenant_connection(db_pool, tenant) as conn:
        endpoint, receiver.secret = await create_endpoint(
            conn,
            ADMIN,
            receiver.url,
            [EventType.BOUNCED, EventType.CAMPAIGN_STATE_CHANGED],
            policy=loopback_allowed,
            description="CRM",
        )
        assert [e.id for e in await list_endpoints(conn)] == [endpoint.id]
        data = {"email": "jane@example.com", "campaign": "launch", "status": "5.1.1"}
        event_id = await emit(conn, EventType.BOUNCED, data)
        assert event_id is not None
        # Nobody subscribed to deliveries: nothing is stored, nothing is sent.
        assert await emit(conn, EventType.DELIVERED, {"email": "bob@example.com"}) is None

    # Retries without waiting here; the default schedule's waits are checked below.
    dispatcher = Dispatcher(db_pool, schedule=RetrySchedule((timedelta(0),) * 3))
    try:
        assert await drain(dispatcher, tenant) == 3
    finally:
        await dispatcher.aclose()

    assert receiver.refused_signatures == 0
    assert len(receiver.received) == 3
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert ids == {event_id}  # one id for every attempt: receivers de-duplicate on it
    bodies = {body for _, body in receiver.received}
    assert len(bodies) == 1
    payload = json.loads(bodies.pop())
    assert payload["type"] == "delivery.bounced" and payload["data"] == data
    assert all(h["content-type"] == "application/json" for h, _ in receiver.received)
    assert {h["host"] for h, _ in receiver.received} == {receiver.url.split("/")[2]}

    async with tenant_connection(db_pool, tenant) as conn:
        attempts = await delivery_log(conn, endpoint_id=endpoint.id)
        audit = await list_entries(conn, action="webhook_endpoint.create")
    assert [(a.attempt, a.status_code) for a in reversed(attempts)] == [
        (1, 503),
        (2, 503),
        (3, 200),
    ]
    assert {a.state for a in attempts} == {"succeeded"}
    assert [a.response for a in reversed(attempts)] == [
        FAILURE_BODY[:RESPONSE_LIMIT],
        FAILURE_BODY[:RESPONSE_LIMIT],
        "ok",
    ]
    assert all(a.latency_ms >= 0 and a.error is None for a in attempts)
    [created] = audit.entries
    assert created.target == f"webhook_endpoint:{endpoint.id}"
    assert receiver.secret not in json.dumps(created.as_json())


async def test_default_schedule_waits_then_gives_up_and_manual_redelivery_resends(
    db_pool: asyncpg.Pool, receiver: Receiver, loopback_allowed: EgressPolicy
) -> None:
    tenant = await new_tenant(db_pool)
    receiver.fail_first = 10**6  # down until told otherwise
    async with tenant_connection(db_pool, tenant) as conn:
        _, receiver.secret = await create_endpoint(
            conn, ADMIN, receiver.url, [EventType.UNSUBSCRIBED], policy=loopback_allowed
        )
        event_id = await emit(conn, EventType.UNSUBSCRIBED, {"email": "jane@example.com"})

    default = Dispatcher(db_pool)
    try:
        assert await default.deliver_due(tenant) == 1
        assert await default.deliver_due(tenant) == 0  # not due yet: it waits 5 s
    finally:
        await default.aclose()
    async with tenant_connection(db_pool, tenant) as conn:
        row = await conn.fetchrow(
            "SELECT d.id, d.state, d.next_attempt_at - a.at AS wait FROM webhook_deliveries d "
            "JOIN webhook_attempts a ON a.delivery_id = d.id WHERE d.event_id = $1",
            event_id,
        )
    assert row is not None
    assert (row["state"], row["wait"]) == ("pending", DEFAULT_RETRY_SCHEDULE.after(1))
    delivery_id = row["id"]

    # Two more attempts allowed (the schedule's length), then the delivery has failed.
    short = Dispatcher(db_pool, schedule=RetrySchedule((timedelta(0), timedelta(0))))
    try:
        async with tenant_connection(db_pool, tenant) as conn:
            await redeliver(conn, ADMIN, delivery_id)  # pending: only moved to now
        assert await drain(short, tenant) == 2
        async with tenant_connection(db_pool, tenant) as conn:
            log = await delivery_log(conn, event_id=event_id)
        assert [(a.attempt, a.status_code) for a in reversed(log)] == [(1, 503), (2, 503), (3, 503)]
        assert log[0].state == "failed"

        # A manual redelivery of a failed delivery: one more attempt, outside the schedule.
        async with tenant_connection(db_pool, tenant) as conn:
            assert await redeliver(conn, ADMIN, delivery_id)
        assert await drain(short, tenant) == 1
        receiver.fail_first = 0
        async with tenant_connection(db_pool, tenant) as conn:
            assert await redeliver(conn, ADMIN, delivery_id)
            assert not await redeliver(conn, ADMIN, 2**62)
        assert await drain(short, tenant) == 1
    finally:
        await short.aclose()
    async with tenant_connection(db_pool, tenant) as conn:
        log = await delivery_log(conn, event_id=event_id)
        audit = await list_entries(conn, action="webhook_delivery.redeliver")
    assert [(a.attempt, a.status_code) for a in reversed(log)][3:] == [(4, 503), (5, 200)]
    assert log[0].state == "succeeded"
    assert len(audit.entries) == 3
    assert {h["webhook-id"] for h, _ in receiver.received} == {event_id}
    assert len(receiver.received) == 5 and receiver.refused_signatures == 0


async def test_internal_destinations_are_refused_without_the_allow_setting(
    db_pool: asyncpg.Pool,
    postgres_dsn: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = await new_tenant(db_pool)
    monkeypatch.delenv("PM_EGRESS_ALLOW", raising=False)  # production
    production = EgressPolicy.from_env()
    async with tenant_connection(db_pool, tenant) as conn:
        with pytest.raises(DestinationNotAllowedError) as refused:
            await create_endpoint(conn, ADMIN, receiver.url, [EventType.BOUNCED], policy=production)
        assert refused.value.field == "url" and "loopback" in refused.value.message
        with pytest.raises(WebhookError) as bad:
            await create_endpoint(
                conn, ADMIN, "https://u:p@hooks.example/x", [EventType.BOUNCED], policy=production
            )
        assert bad.value.field == "url"
        # Created while the network was allowed (or the name resolved elsewhere then)...
        allowed = EgressPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"),))
        _, receiver.secret = await create_endpoint(
            conn, ADMIN, receiver.url, [EventType.BOUNCED], policy=allowed
        )
        event_id = await emit(conn, EventType.BOUNCED, {"email": "jane@example.com"})
    # ...the dispatcher checks again before every attempt.
    dispatcher = Dispatcher(db_pool)
    try:
        assert await dispatcher.deliver_due(tenant) == 1
        assert await dispatcher.deliver_due(tenant) == 0
    finally:
        await dispatcher.aclose()
    async with tenant_connection(db_pool, tenant) as conn:
        [attempt] = await delivery_log(conn, event_id=event_id)
    assert attempt.state == "failed" and attempt.status_code is None
    assert attempt.error is not None and "loopback" in attempt.error
    assert receiver.received == []

    # The tenant's own login (what its pods hold) cannot read endpoints or their secrets.
    password = new_password()
    role = await ensure_tenant_login(db_pool, tenant, password)
    pod = await asyncpg.connect(with_login(postgres_dsn, role, password))
    try:
        for table in ("webhook_endpoints", "webhook_events", "webhook_deliveries"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await pod.fetch(f"SELECT * FROM {table}")  # noqa: S608
    finally:
        await pod.close()


async def test_rotation_update_and_history_retention(
    db_pool: asyncpg.Pool, receiver: Receiver, loopback_allowed: EgressPolicy
) -> None:
    tenant = await new_tenant(db_pool)
    async with tenant_connection(db_pool, tenant) as conn:
        endpoint, old = await create_endpoint(
            conn, ADMIN, receiver.url, [EventType.COMPLAINED], policy=loopback_allowed
        )
        new = await rotate_secret(conn, ADMIN, endpoint.id)
        assert new is not None and new != old
        assert await rotate_secret(conn, ADMIN, uuid.uuid4()) is None
        first = await emit(conn, EventType.COMPLAINED, {"email": "jane@example.com"})
    dispatcher = Dispatcher(db_pool, schedule=RetrySchedule(()), retention=timedelta(0))
    try:
        # A receiver that has not switched yet still verifies (the old secret's signature)...
        receiver.secret = old
        assert await dispatcher.deliver_due(tenant) == 1
        # ...and one that has switched verifies the new one.
        async with tenant_connection(db_pool, tenant) as conn:
            second = await emit(conn, EventType.COMPLAINED, {"email": "bob@example.com"})
        receiver.secret = new
        assert await dispatcher.deliver_due(tenant) == 1
        assert receiver.refused_signatures == 0
        assert [h["webhook-id"] for h, _ in receiver.received] == [first, second]

        async with tenant_connection(db_pool, tenant) as conn:
            # Disabled: it gets no events (and none is stored when nobody else wants it).
            updated = await update_endpoint(
                conn, ADMIN, endpoint.id, policy=loopback_allowed, enabled=False
            )
            assert updated is not None and not updated.enabled
            third = await emit(conn, EventType.COMPLAINED, {"email": "carol@example.com"})
            assert third is None  # no enabled endpoint wants it: nothing stored
            with pytest.raises(WebhookError) as bad:
                await update_endpoint(
                    conn, ADMIN, endpoint.id, policy=loopback_allowed, event_types=["x.y"]
                )
            assert bad.value.field == "event_types"
            with pytest.raises(DestinationNotAllowedError):
                await update_endpoint(
                    conn, ADMIN, endpoint.id, policy=EgressPolicy(), url="http://10.1.2.3/x"
                )
            updated = await update_endpoint(
                conn,
                ADMIN,
                endpoint.id,
                policy=loopback_allowed,
                enabled=True,
                event_types=[EventType.COMPLAINED, EventType.DELIVERED],
            )
            assert updated is not None and updated.enabled
            assert updated.event_types == ["delivery.complained", "delivery.delivered"]
            pending = await emit(conn, EventType.DELIVERED, {"email": "dan@example.com"})
            audit = await list_entries(conn, action="webhook_endpoint.*")
        assert [e.action for e in audit.entries] == [
            "webhook_endpoint.update",
            "webhook_endpoint.update",
            "webhook_endpoint.rotate_secret",
            "webhook_endpoint.create",
        ]
        assert all(new not in json.dumps(e.as_json()) for e in audit.entries)

        # Finished events past retention go (their payloads name recipients); the pending
        # one stays until it is delivered.
        assert await dispatcher.purge_history(tenant) == 2
        async with tenant_connection(db_pool, tenant) as conn:
            left = await conn.fetch("SELECT id FROM webhook_events")
            assert [r["id"] for r in left] == [pending]
            assert await conn.fetchval("SELECT count(*) FROM webhook_attempts") == 0
    finally:
        await dispatcher.aclose()


async def test_dispatcher_process_retries_on_time_is_woken_by_events_and_stops_on_sigterm(
    db_pool: asyncpg.Pool, postgres_dsn: str, receiver: Receiver, loopback_allowed: EgressPolicy
) -> None:
    """The dispatcher as it runs in production: its own process, default schedule and timers.
    Its full pass comes every RESCAN_SECONDS (60 s); what happens sooner than that came from
    the retry it remembered and from the notification `emit()` sent."""
    tenant = await new_tenant(db_pool)
    receiver.fail_first = 1
    async with tenant_connection(db_pool, tenant) as conn:
        _, receiver.secret = await create_endpoint(
            conn, ADMIN, receiver.url, [EventType.CAMPAIGN_STATE_CHANGED], policy=loopback_allowed
        )
        first = await emit(
            conn, EventType.CAMPAIGN_STATE_CHANGED, {"campaign": "launch", "to": "Sending"}
        )
    env = {**os.environ, "PM_DATABASE_URL": postgres_dsn, "PM_EGRESS_ALLOW": "127.0.0.0/8"}
    env.pop("PM_WEBHOOK_RESCAN_SECONDS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "penguinmails.common.webhook_dispatch",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )

    async def received(count: int, within: float) -> None:
        for _ in range(int(within / 0.25)):
            if len(receiver.received) >= count or process.returncode is not None:
                break
            await asyncio.sleep(0.25)
        assert len(receiver.received) == count, f"{len(receiver.received)} requests"

    try:
        # The start-up pass posts it (503); the retry 5 s later (DEFAULT_RETRY_SCHEDULE) is
        # taken well before the next full pass.
        await received(2, within=40)
        # A tenant the running process has never seen (its full pass is a minute away): only
        # the notification sent by emit() can make it post this one.
        newcomer = await new_tenant(db_pool)
        async with tenant_connection(db_pool, newcomer) as conn:
            _, secret = await create_endpoint(
                conn,
                ADMIN,
                receiver.url,
                [EventType.CAMPAIGN_STATE_CHANGED],
                policy=loopback_allowed,
            )
            receiver.more_secrets.append(secret)
            second = await emit(
                conn, EventType.CAMPAIGN_STATE_CHANGED, {"campaign": "launch", "to": "Paused"}
            )
        await received(3, within=40)
        assert [h["webhook-id"] for h, _ in receiver.received] == [first, first, second]
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "webhook dispatcher stopped" in text and "Traceback" not in text
    assert receiver.secret not in text and secret not in text
    async with tenant_connection(db_pool, tenant) as conn:
        log = await delivery_log(conn)
    async with tenant_connection(db_pool, newcomer) as conn:
        log = await delivery_log(conn) + log
    assert [(a.event_id, a.attempt, a.status_code) for a in reversed(log)] == [
        (first, 1, 503),
        (first, 2, 200),
        (second, 1, 200),
    ]


async def test_another_tenant_cannot_see_redeliver_or_delete(
    db_pool: asyncpg.Pool, receiver: Receiver, loopback_allowed: EgressPolicy
) -> None:
    owner, intruder = await new_tenant(db_pool), await new_tenant(db_pool)
    async with tenant_connection(db_pool, owner) as conn:
        endpoint, receiver.secret = await create_endpoint(
            conn, ADMIN, receiver.url, [EventType.BOUNCED], policy=loopback_allowed
        )
        event_id = await emit(conn, EventType.BOUNCED, {"email": "jane@example.com"})
    dispatcher = Dispatcher(db_pool)
    try:
        assert await dispatcher.deliver_due(owner) == 1
        assert await dispatcher.deliver_due(intruder) == 0
    finally:
        await dispatcher.aclose()
    async with tenant_connection(db_pool, owner) as conn:
        [attempt] = await delivery_log(conn, event_id=event_id)

    async with tenant_connection(db_pool, intruder) as conn:
        assert await list_endpoints(conn) == []
        assert await delivery_log(conn) == []
        assert await delivery_log(conn, event_id=event_id) == []
        assert not await redeliver(conn, ADMIN, attempt.delivery_id)
        assert await rotate_secret(conn, ADMIN, endpoint.id) is None
        assert await update_endpoint(conn, ADMIN, endpoint.id, policy=loopback_allowed) is None
        assert not await delete_endpoint(conn, ADMIN, endpoint.id)
        assert (await list_entries(conn)).entries == []  # and nothing was audited for it

    async with tenant_connection(db_pool, owner) as conn:
        assert [e.id for e in await list_endpoints(conn)] == [endpoint.id]
        assert await delete_endpoint(conn, ADMIN, endpoint.id)
        assert await list_endpoints(conn) == []
        assert await delivery_log(conn) == []  # its deliveries and log went with it
        deleted = await list_entries(conn, action="webhook_endpoint.delete")
        assert [e.target for e in deleted.entries] == [f"webhook_endpoint:{endpoint.id}"]
    assert len(receiver.received) == 1


class CountingDispatcher(Dispatcher):
    def __init__(self, pool: asyncpg.Pool, watched: uuid.UUID) -> None:
        super().__init__(pool)
        self.watched = watched
        self.passes = 0

    async def deliver_due(self, tenant_id: uuid.UUID) -> int:
        if tenant_id == self.watched:
            self.passes += 1
        return await super().deliver_due(tenant_id)


async def test_dispatcher_does_not_spin_on_deliveries_it_may_not_send(
    db_pool: asyncpg.Pool, receiver: Receiver, loopback_allowed: EgressPolicy
) -> None:
    """A delivery stays pending while its endpoint is disabled: the dispatcher must wait for
    the endpoint (or its next full pass), not query that tenant in a loop."""
    tenant = await new_tenant(db_pool)
    dispatcher = CountingDispatcher(db_pool, tenant)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run_forever(stop))
    try:
        async with tenant_connection(db_pool, tenant) as conn:
            endpoint, receiver.secret = await create_endpoint(
                conn, ADMIN, receiver.url, [EventType.BOUNCED], policy=loopback_allowed
            )
            assert await emit(conn, EventType.BOUNCED, {"email": "jane@example.com"})
            await update_endpoint(conn, ADMIN, endpoint.id, policy=loopback_allowed, enabled=False)
        for _ in range(200):  # the notification arrives...
            if dispatcher.passes:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(2)  # ...then two seconds in which a spinning loop runs hundreds
        assert 1 <= dispatcher.passes <= 2, f"{dispatcher.passes} passes over one tenant"
        assert receiver.received == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await dispatcher.aclose()
