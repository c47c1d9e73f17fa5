"""Contacts, lists, imports, suppression and usage through the customer API (the API as its own
process, its own database login, the chart's RBAC), with a tenant's credentials: a 10,000-row
CSV with bad lines imported in the background with its progress observed and its skipped lines
named by line and field; an import whose API process dies is shown failed, never running; the
suppression list written through the API is the one the sender path reads; viewers and
read-only keys cannot write; every write is audited; and no endpoint shows or changes anything
of another tenant."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.api.http.import_runner import MAX_BYTES_ENV, STOPPED
from penguinmails.common.db import tenant_connection, tenant_scope
from penguinmails.common.db.contact_imports import ABANDONED
from penguinmails.common.db.ledger import (
    DeliveryState,
    Outcome,
    claim,
    enqueue,
    record,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import address_hash
from tests.integration.api_stack import (
    ApiServer,
    TenantAccess,
    api_database_url,
    api_kubeconfig,
    api_server,
    start_api,
    stop_api,
    tenant_access,
)
from tests.integration.test_gdpr import plan

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

MASTER_KEY = "api-contacts-master-key-0123456789abcdef"
MAX_BYTES = 2_000_000
"""The upload limit the API runs with here: the 10,000-row file (about 0.5 MB) fits."""
ROWS = 10_000
CSV_TYPE = {"Content-Type": "text/csv"}


def _env(**extra: str) -> dict[str, str]:
    return {"PM_SUPPRESSION_KEY": MASTER_KEY, MAX_BYTES_ENV: str(MAX_BYTES), **extra}


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    return _env()


READER, WRITER = 0, 1
"""tenant_access's keys, in the order asked for."""
KEY_SCOPES = [
    ["contacts:read", "suppression:read"],
    ["contacts:write", "suppression:write", "campaigns:read"],
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant_a(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> TenantAccess:
    return await tenant_access(api_server, db_pool, core, "contacts-a", KEY_SCOPES)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant_b(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> TenantAccess:
    return await tenant_access(api_server, db_pool, core, "contacts-b", KEY_SCOPES)


def _key() -> bytes:
    return MasterKeys.parse(MASTER_KEY).suppression_key()


@dataclass(frozen=True)
class BigCsv:
    body: bytes
    good: list[str]
    """The addresses that must be imported, in file order."""
    bad: dict[int, str | None]
    """Line number -> the field its error must name."""


def _big_csv(tag: str, blocker_line: int) -> tuple[BigCsv, str]:
    """ROWS data rows (lines 2 to ROWS + 1), one bad line in about 250, of four kinds; and
    the address on `blocker_line` (a good one)."""
    lines = [b"email,first_name,company"]
    good: list[str] = []
    bad: dict[int, str | None] = {}
    blocker = ""
    for n in range(ROWS):
        line = n + 2
        address = f"c{n}-{tag}@example.com"
        if n % 250 == 17:
            kind = (n // 250) % 4
            if kind == 0:
                lines.append(f"not-an-address-{n},Bad,Acme".encode())
                bad[line] = "email"
            elif kind == 1:
                lines.append(f"{address},Short".encode())  # two columns of three
                bad[line] = None
            elif kind == 2:
                lines.append(f"{address},Caf\xe9,Acme".encode("latin-1"))  # not UTF-8
                bad[line] = None
            else:
                lines.append(f"{good[0].upper()},Again,Acme".encode())  # line 2's address
                bad[line] = "email"
            continue
        lines.append(f"{address},Name{n},Acme".encode())
        good.append(address)
        if line == blocker_line:
            blocker = address
    assert blocker
    return BigCsv(b"\n".join(lines) + b"\n", good, bad), blocker


class _RollbackError(Exception):
    pass


@asynccontextmanager
async def holding_address(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, list_id: str, address: str
) -> AsyncIterator[None]:
    """An uncommitted contact with `address` in the list: an import reaching that address waits
    for this transaction (the unique index), so its progress can be watched mid-way without
    relying on timing. Rolled back on exit."""
    try:
        async with pool.acquire() as conn, tenant_scope(conn, tenant_id):
            await conn.execute(
                "INSERT INTO contacts (list_id, email) VALUES ($1, $2)", uuid.UUID(list_id), address
            )
            yield
            raise _RollbackError
    except _RollbackError:
        pass


async def _wait_for(
    http: httpx.AsyncClient, path: str, done: Any, seen: list[tuple[str, int]]
) -> dict[str, Any]:
    """Poll the job until `done(job)`; every distinct (state, rowsDone) seen is kept."""
    for _ in range(1200):
        response = await http.get(path)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        observed = (job["state"], job["rowsDone"])
        if not seen or seen[-1] != observed:
            seen.append(observed)
        if done(job):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never reached the expected state: {seen}")


async def _pages(http: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await http.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["data"]
        if not body["hasMore"]:
            return items
        cursor = body["nextCursor"]


async def test_a_large_import_shows_progress_and_names_bad_lines(
    api_server: ApiServer, tenant_a: TenantAccess, db_pool: asyncpg.Pool
) -> None:
    blocker_line = 7_502
    csv, blocker = _big_csv(uuid.uuid4().hex[:6], blocker_line)
    async with api_server.client(tenant_a.owner) as http:
        made = await http.post(f"{tenant_a.base}/contact-lists", json={"name": "leads"})
        assert made.status_code == 201, made.text
        list_id = made.json()["id"]
        seen: list[tuple[str, int]] = []
        async with holding_address(db_pool, tenant_a.setup.id, list_id, blocker):
            started = await http.post(
                f"{tenant_a.base}/contact-imports",
                params={"list": "leads"},
                content=csv.body,
                headers={**CSV_TYPE, "Idempotency-Key": f"import-{list_id}"},
            )
            assert started.status_code == 202, started.text
            job = started.json()
            assert job["state"] == "running" and job["bytesTotal"] == len(csv.body), job
            assert job["listId"] == list_id and job["rowsTotal"] is None, job
            path = f"{tenant_a.base}/contact-imports/{job['id']}"
            # The import waits at the chunk holding the blocker's line, with what came before
            # it read and reported.
            midway = await _wait_for(http, path, lambda j: j["rowsDone"] > 0, seen)
            assert midway["state"] == "running", midway
            assert 0 < midway["rowsDone"] < blocker_line - 1, midway
            assert 0 < midway["bytesDone"] < midway["bytesTotal"], midway
            # The same upload again with the same key: the first answer, no second import.
            again = await http.post(
                f"{tenant_a.base}/contact-imports",
                params={"list": "leads"},
                content=csv.body,
                headers={**CSV_TYPE, "Idempotency-Key": f"import-{list_id}"},
            )
            assert again.headers.get("Idempotent-Replayed") == "true", again.text
            assert again.json()["id"] == job["id"]
        finished = await _wait_for(http, path, lambda j: j["state"] != "running", seen)
        print(f"\nimport progress observed (state, rowsDone): {seen}")
        assert finished["state"] == "succeeded", finished
        assert finished["rowsTotal"] == finished["rowsDone"] == ROWS, finished
        assert finished["imported"] == len(csv.good), finished
        assert finished["skipped"] == len(csv.bad), finished
        assert finished["bytesDone"] == len(csv.body) and finished["finishedAt"], finished
        rows = [n for _, n in seen]
        assert rows == sorted(rows), seen

        errors = await _pages(http, f"{path}/errors", limit="7")
        assert {e["line"]: e["field"] for e in errors} == csv.bad, errors
        assert [e["line"] for e in errors] == sorted(csv.bad)
        print(f"per-line errors: {len(errors)}, e.g. {errors[:4]}")
        messages = {e["line"]: e["message"] for e in errors}
        for line, field in csv.bad.items():
            if field == "email" and "not-an-address" in messages[line]:
                assert "malformed address" in messages[line], messages[line]
        assert any("duplicate of line 2" in m for m in messages.values()), messages
        assert any("columns" in m for m in messages.values()), messages
        assert any("UTF-8" in m for m in messages.values()), messages

        lists = (await http.get(f"{tenant_a.base}/contact-lists")).json()["data"]
        assert [(x["name"], x["contacts"]) for x in lists] == [("leads", len(csv.good))], lists
        # The first pages, through the cursor, in file order; and one address by its filter.
        first = []
        cursor = None
        for _ in range(3):
            page = await http.get(
                f"{tenant_a.base}/contacts",
                params={"list": "leads", "limit": "100", **({"cursor": cursor} if cursor else {})},
            )
            assert page.status_code == 200, page.text
            first += page.json()["data"]
            cursor = page.json()["nextCursor"]
        assert len(first) == 300 and len({c["id"] for c in first}) == 300
        assert {c["email"] for c in first} <= set(csv.good)
        found = await http.get(f"{tenant_a.base}/contacts", params={"email": csv.good[42].upper()})
        (contact,) = found.json()["data"]
        assert contact["email"] == csv.good[42] and contact["listName"] == "leads", contact
        assert contact["fields"] == {"first_name": "Name43", "company": "Acme"}, contact
        shown = await http.get(f"{tenant_a.base}/contacts/{contact['id']}")
        assert shown.status_code == 200 and shown.json() == contact, shown.text
    async with tenant_connection(db_pool, tenant_a.setup.id) as conn:
        stored = await conn.fetch(
            "SELECT c.email FROM contacts c JOIN contact_lists l ON l.id = c.list_id "
            "WHERE l.name = 'leads'"
        )
    assert sorted(r["email"] for r in stored) == sorted(csv.good)


async def test_uploads_past_the_limit_are_refused(
    api_server: ApiServer, tenant_a: TenantAccess
) -> None:
    async with api_server.client(tenant_a.owner) as http:
        url = f"{tenant_a.base}/contact-imports"
        too_big = b"email\n" + b"x@example.com\n" * (MAX_BYTES // 14 + 1)
        refused = await http.post(url, params={"list": "big"}, content=too_big, headers=CSV_TYPE)
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] == "file_too_large", refused.text
        assert str(MAX_BYTES) in refused.json()["error"]["message"]

        # Streamed without a length: refused once the limit is passed, not after the end.
        async def chunks() -> AsyncIterator[bytes]:
            yield b"email\n"
            for _ in range(MAX_BYTES // 65536 + 2):
                yield b"y" * 65536

        streamed = await http.post(url, params={"list": "big"}, content=chunks(), headers=CSV_TYPE)
        assert streamed.status_code == 413, streamed.text
        wrong_type = await http.post(url, params={"list": "big"}, json={"email": "x@example.com"})
        assert wrong_type.status_code == 415, wrong_type.text
        empty = await http.post(url, params={"list": "big"}, content=b"", headers=CSV_TYPE)
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "body"
        lists = (await http.get(f"{tenant_a.base}/contact-lists")).json()["data"]
        assert "big" not in [x["name"] for x in lists], lists


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_an_import_whose_process_ends_is_shown_failed(
    sig: signal.Signals,
    api_server: ApiServer,
    tenant_a: TenantAccess,
    db_pool: asyncpg.Pool,
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A second API process takes the upload and is killed (SIGKILL) or stopped (SIGTERM, as
    Kubernetes does) mid-import: the job reads failed, with the reason, through the first;
    nothing of it was imported."""
    csv, blocker = _big_csv(uuid.uuid4().hex[:6], 3_002)
    process, doomed = start_api(
        tmp_path_factory.mktemp("api-doomed"),
        database_url=api_database_url,
        redis_url=redis_url,
        kubeconfig=api_kubeconfig,
        # A replica of the first: the same signing keys, so the same access tokens work.
        **_env(PM_API_SIGNING_KEYS=api_server.signing_keys),
    )
    try:
        async with api_server.client(tenant_a.owner) as http:
            doomed_list = f"doomed-{sig.name.lower()}"
            made = await http.post(f"{tenant_a.base}/contact-lists", json={"name": doomed_list})
            assert made.status_code == 201, made.text
            list_id = made.json()["id"]
            seen: list[tuple[str, int]] = []
            async with holding_address(db_pool, tenant_a.setup.id, list_id, blocker):
                async with doomed.client(tenant_a.owner) as other:
                    started = await other.post(
                        f"{tenant_a.base}/contact-imports",
                        params={"list": doomed_list},
                        content=csv.body,
                        headers=CSV_TYPE,
                    )
                assert started.status_code == 202, started.text
                path = f"{tenant_a.base}/contact-imports/{started.json()['id']}"
                await _wait_for(http, path, lambda j: j["rowsDone"] > 0, seen)
                assert process.pid is not None
                os.kill(process.pid, sig)
                if sig is signal.SIGKILL:
                    # Still running while its backend waits on the lock: PostgreSQL notices a
                    # dead client when the backend next uses its socket.
                    assert (await http.get(path)).json()["state"] == "running"
                else:
                    # A clean stop cancels the import, lock wait or not, and says so.
                    await _wait_for(http, path, lambda j: j["state"] != "running", seen)
            failed = await _wait_for(http, path, lambda j: j["state"] != "running", seen)
            print(f"\n{sig.name} import observed (state, rowsDone): {seen}")
            reason = ABANDONED if sig is signal.SIGKILL else STOPPED
            assert failed["state"] == "failed" and failed["failure"] == reason, failed
            assert failed["finishedAt"] is not None, failed
            again = (await http.get(path)).json()
            assert again["state"] == "failed", again
            lists = (await http.get(f"{tenant_a.base}/contact-lists")).json()["data"]
            assert {x["name"]: x["contacts"] for x in lists}[doomed_list] == 0, lists
    finally:
        stop_api(process)


async def test_suppression_through_the_api_is_what_the_sender_reads(
    api_server: ApiServer, tenant_a: TenantAccess, db_pool: asyncpg.Pool
) -> None:
    tag = uuid.uuid4().hex[:6]
    kept, stopped, bulk = (f"{who}-{tag}@example.com" for who in ("kept", "stopped", "bulk"))
    body = f"email,first_name\n{kept},Kim\n{stopped},Sam\n{bulk},Bo\n".encode()
    sup = f"{tenant_a.base}/suppressions"
    async with api_server.client(tenant_a.keys[WRITER]) as http:
        started = await http.post(
            f"{tenant_a.base}/contact-imports",
            params={"list": f"sender-{tag}"},
            content=body,
            headers=CSV_TYPE,
        )
        assert started.status_code == 202, started.text
        done = await _wait_for(
            http,
            f"{tenant_a.base}/contact-imports/{started.json()['id']}",
            lambda j: j["state"] != "running",
            [],
        )
        assert done["state"] == "succeeded" and done["imported"] == 3, done
    # A campaign enqueued before the suppression (as the operator does it).
    uid = uuid.uuid4()
    async with tenant_connection(db_pool, tenant_a.setup.id) as conn:
        await upsert_campaign(
            conn, uid=uid, namespace=tenant_a.setup.namespace, name=f"c-{tag}", plan=plan()
        )
        assert await enqueue(conn, uid, [f"sender-{tag}"]) == 3
        await set_sending(conn, uid, True)

    async with api_server.client(tenant_a.keys[WRITER]) as http:
        before = await http.post(f"{sup}/check", json={"email": stopped})
        assert before.status_code == 200 and before.json()["suppressed"] is False, before.text
        added = await http.post(sup, json={"email": stopped.upper(), "reason": "unsubscribed"})
        assert added.status_code == 200, added.text
        entry = added.json()
        hashed = address_hash(_key(), stopped)
        assert entry["addressHash"] == hashed.hex() and entry["added"] is True, entry
        assert entry["reason"] == "unsubscribed" and entry["source"] == "api", entry
        assert stopped not in added.text
        check = (await http.post(f"{sup}/check", json={"email": f" {stopped} "})).json()
        assert check["suppressed"] is True and check["addressHash"] == hashed.hex(), check
        assert check["reason"] == "unsubscribed", check
        repeat = (await http.post(sup, json={"email": stopped})).json()
        assert repeat["added"] is False and repeat["reason"] == "unsubscribed", repeat
        many = await http.post(
            f"{sup}/bulk", json={"emails": [bulk, bulk.upper(), stopped], "reason": "manual"}
        )
        assert many.status_code == 200, many.text
        assert many.json() == {"added": 1, "alreadySuppressed": 1}, many.json()
        refused = await http.post(f"{sup}/bulk", json={"emails": [kept, "nope"]})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "emails[1]", refused.text
        listed = await _pages(http, sup, limit="1")
        assert {e["addressHash"] for e in listed} == {
            hashed.hex(),
            address_hash(_key(), bulk).hex(),
        }
        assert all("@" not in str(e) for e in listed), listed

    # The sender's claim reads the same keyed hash: the delivery to the suppressed address
    # comes out marked suppressed (and is skipped), the others not.
    async with tenant_connection(db_pool, tenant_a.setup.id) as conn:
        claimed = await claim(conn, "test-sender", 10, timedelta(minutes=5), uid)
        by_email = {c.email: c.suppressed for c in claimed}
        assert by_email == {kept: False, stopped: True, bulk: True}, by_email
        await record(
            conn,
            [
                Outcome(c.id, DeliveryState.SENT if not c.suppressed else DeliveryState.SKIPPED)
                for c in claimed
            ],
            "test-sender",
        )
        # A campaign enqueued afterwards leaves both out.
        later = uuid.uuid4()
        await upsert_campaign(
            conn, uid=later, namespace=tenant_a.setup.namespace, name=f"d-{tag}", plan=plan()
        )
        assert await enqueue(conn, later, [f"sender-{tag}"]) == 1
        sent = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE sent_at >= date_trunc('month', now())"
        )

    async with api_server.client(tenant_a.keys[WRITER]) as http:
        usage = (await http.get(f"{tenant_a.base}/usage")).json()
        assert usage["emailsSent"] == sent >= 1, (usage, sent)
        assert usage["tier"] == "starter" and usage["emailsPerMonth"] == 10_000, usage
        assert datetime.fromisoformat(usage["periodStart"]) == datetime.now(UTC).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        removed = await http.delete(f"{sup}/{hashed.hex()}")
        assert removed.status_code == 204, removed.text
        assert (await http.delete(f"{sup}/{hashed.hex()}")).status_code == 404
        check = (await http.post(f"{sup}/check", json={"email": stopped})).json()
        assert check["suppressed"] is False, check

    async with api_server.client(tenant_a.owner) as http:
        log = await _pages(http, f"{tenant_a.base}/audit-log", action="suppression.*")
    actions = [(e["action"], e["target"]) for e in reversed(log)]
    assert actions == [
        ("suppression.add", f"address:{hashed.hex()}"),
        ("suppression.add", f"address:{hashed.hex()}"),
        ("suppression.add_bulk", None),
        ("suppression.remove", f"address:{hashed.hex()}"),
    ], actions
    assert all(stopped not in str(e) for e in log)


async def test_viewers_and_read_keys_cannot_write_and_writes_are_audited(
    api_server: ApiServer, tenant_a: TenantAccess
) -> None:
    base = tenant_a.base
    async with api_server.client(tenant_a.owner) as http:
        made = await http.post(f"{base}/contact-lists", json={"name": "audited"})
        assert made.status_code == 201, made.text
        duplicate = await http.post(f"{base}/contact-lists", json={"name": "audited"})
        assert duplicate.status_code == 409, duplicate.text
        list_id = made.json()["id"]
        started = await http.post(
            f"{base}/contact-imports",
            params={"list": "audited"},
            content=b"email\nann@example.com\n",
            headers=CSV_TYPE,
        )
        job = await _wait_for(
            http,
            f"{base}/contact-imports/{started.json()['id']}",
            lambda j: j["state"] != "running",
            [],
        )
        assert job["imported"] == 1, job
        (contact,) = (await http.get(f"{base}/contacts", params={"list": "audited"})).json()["data"]

    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"{base}/contact-lists", {"json": {"name": "nope"}}),
        ("DELETE", f"{base}/contact-lists/{list_id}", {}),
        ("DELETE", f"{base}/contacts/{contact['id']}", {}),
        (
            "POST",
            f"{base}/contact-imports",
            {"params": {"list": "nope"}, "content": b"email\nx@example.com\n", "headers": CSV_TYPE},
        ),
        ("POST", f"{base}/suppressions", {"json": {"email": "x@example.com"}}),
        ("POST", f"{base}/suppressions/bulk", {"json": {"emails": ["x@example.com"]}}),
        ("DELETE", f"{base}/suppressions/{'0' * 64}", {}),
    ]
    reads = [
        f"{base}/contacts",
        f"{base}/contacts/{contact['id']}",
        f"{base}/contact-lists",
        f"{base}/contact-imports/{job['id']}",
        f"{base}/contact-imports/{job['id']}/errors",
        f"{base}/suppressions",
        f"{base}/usage",
    ]
    denied = 0
    for token in (tenant_a.viewer, tenant_a.keys[READER]):
        async with api_server.client(token) as http:
            for method, url, kwargs in writes:
                response = await http.request(method, url, **kwargs)
                assert response.status_code == 403, (method, url, response.text)
                denied += 1
            for url in reads:
                if url.endswith("/usage") and token == tenant_a.keys[READER]:
                    continue  # usage needs campaigns:read, which this key lacks
                response = await http.get(url)
                assert response.status_code == 200, (url, response.text)
            check = await http.post(f"{base}/suppressions/check", json={"email": "x@example.com"})
            assert check.status_code == 200, check.text
    print(f"\nwrites refused to a viewer and a read-only key: {denied}")

    async with api_server.client(tenant_a.owner) as http:
        gone = await http.delete(f"{base}/contacts/{contact['id']}")
        assert gone.status_code == 204, gone.text
        assert (await http.get(f"{base}/contacts/{contact['id']}")).status_code == 404
        dropped = await http.delete(f"{base}/contact-lists/{list_id}")
        assert dropped.status_code == 204, dropped.text
        log = await _pages(http, f"{base}/audit-log", actor=f"user:{tenant_a.owner_id}")
    recorded = {(e["action"], e["target"]) for e in log}
    for expected in (
        ("contact_list.create", f"contact_list:{list_id}"),
        ("contact_import.create", f"contact_import:{job['id']}"),
        ("contact.delete", f"contact:{contact['id']}"),
        ("contact_list.delete", f"contact_list:{list_id}"),
    ):
        assert expected in recorded, (expected, recorded)


async def test_a_tenants_imports_are_listed_newest_first_with_their_progress(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> None:
    mine = await tenant_access(api_server, db_pool, core, "contacts-ls", KEY_SCOPES)
    url = f"{mine.base}/contact-imports"
    files = [
        ("ls-one", b"email\na1@example.com\na2@example.com\n", 2, 0),
        ("ls-two", b"email\nb1@example.com\nnot-an-address\nb1@example.com\n", 1, 2),
        ("ls-one", b"email\nc1@example.com\n", 1, 0),
    ]
    started: list[str] = []
    async with api_server.client(mine.owner) as http:
        empty = await http.get(url)
        assert empty.status_code == 200 and empty.json() == {
            "data": [],
            "hasMore": False,
            "nextCursor": None,
        }, empty.text
        for list_name, body, _, _ in files:
            answer = await http.post(
                url, params={"list": list_name}, content=body, headers=CSV_TYPE
            )
            assert answer.status_code == 202, answer.text
            await _wait_for(
                http, f"{url}/{answer.json()['id']}", lambda j: j["state"] != "running", []
            )
            started.append(answer.json()["id"])
    # A read key pages through them, newest first, one per page: each with its outcome.
    async with api_server.client(mine.keys[READER]) as http:
        listed = await _pages(http, url, limit="1")
        bad = await http.get(url, params={"cursor": "ie1.MTA"})  # another list's cursor
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "cursor", bad.text
    assert [job["id"] for job in listed] == started[::-1]
    for job, (list_name, body, imported, skipped) in zip(listed, files[::-1], strict=True):
        assert job["listName"] == list_name
        assert (job["state"], job["imported"], job["skipped"]) == ("succeeded", imported, skipped)
        assert job["bytesDone"] == job["bytesTotal"] == len(body)
        assert job["rowsDone"] == job["rowsTotal"] == body.count(b"\n") - 1
    # A viewer reads them too.
    async with api_server.client(mine.viewer) as http:
        assert [j["id"] for j in (await http.get(url)).json()["data"]] == started[::-1]


async def test_no_endpoint_shows_or_changes_another_tenants_data(
    api_server: ApiServer, tenant_a: TenantAccess, tenant_b: TenantAccess
) -> None:
    tag = uuid.uuid4().hex[:6]
    secret = f"b-only-{tag}@example.com"
    async with api_server.client(tenant_b.owner) as http:
        started = await http.post(
            f"{tenant_b.base}/contact-imports",
            params={"list": f"b-{tag}"},
            content=f"email,note\n{secret},B\nbroken\n".encode(),
            headers=CSV_TYPE,
        )
        job = await _wait_for(
            http,
            f"{tenant_b.base}/contact-imports/{started.json()['id']}",
            lambda j: j["state"] != "running",
            [],
        )
        assert job["imported"] == 1 and job["skipped"] == 1, job
        (contact,) = (
            await http.get(f"{tenant_b.base}/contacts", params={"list": f"b-{tag}"})
        ).json()["data"]
        added = await http.post(f"{tenant_b.base}/suppressions", json={"email": secret})
        b_hash = added.json()["addressHash"]
    b_ids = {contact["id"], contact["listId"], job["id"], b_hash}

    def probes(base: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            ("GET", f"{base}/contacts", {}),
            ("GET", f"{base}/contacts", {"params": {"email": secret}}),
            ("GET", f"{base}/contacts/{contact['id']}", {}),
            ("DELETE", f"{base}/contacts/{contact['id']}", {}),
            ("GET", f"{base}/contact-lists", {}),
            ("POST", f"{base}/contact-lists", {"json": {"name": f"x-{tag}"}}),
            ("DELETE", f"{base}/contact-lists/{contact['listId']}", {}),
            (
                "POST",
                f"{base}/contact-imports",
                {
                    "params": {"list": f"b-{tag}"},
                    "content": b"email\nz@example.com\n",
                    "headers": CSV_TYPE,
                },
            ),
            ("GET", f"{base}/contact-imports", {}),
            ("GET", f"{base}/contact-imports/{job['id']}", {}),
            ("GET", f"{base}/contact-imports/{job['id']}/errors", {}),
            ("GET", f"{base}/suppressions", {}),
            ("POST", f"{base}/suppressions", {"json": {"email": secret}}),
            ("POST", f"{base}/suppressions/bulk", {"json": {"emails": [secret]}}),
            ("POST", f"{base}/suppressions/check", {"json": {"email": secret}}),
            ("DELETE", f"{base}/suppressions/{b_hash}", {}),
            ("GET", f"{base}/usage", {}),
        ]

    count = 0
    # A's credentials aimed at B's tenant: 404 (B is invisible to them).
    for token in (tenant_a.owner, tenant_a.keys[WRITER], tenant_a.viewer):
        async with api_server.client(token) as http:
            for method, url, kwargs in probes(tenant_b.base):
                response = await http.request(method, url, **kwargs)
                assert response.status_code == 404, (method, url, response.text)
                assert not any(i in response.text for i in b_ids) and secret not in response.text
                count += 1
    # A's credentials in A's tenant with B's ids: not found, nothing of B shown or changed.
    async with api_server.client(tenant_a.owner) as http:
        for method, url, kwargs in probes(tenant_a.base):
            if not any(i in url for i in b_ids):
                continue
            response = await http.request(method, url, **kwargs)
            assert response.status_code == 404, (method, url, response.text)
            assert not any(i in response.text for i in b_ids), response.text
            count += 1
        mine = await http.get(f"{tenant_a.base}/contacts", params={"email": secret})
        assert mine.json()["data"] == [], mine.text
        # A's own imports never include B's.
        listed = await _pages(http, f"{tenant_a.base}/contact-imports")
        assert job["id"] not in [j["id"] for j in listed] and f"b-{tag}" not in str(listed)
        count += 1
        check = await http.post(f"{tenant_a.base}/suppressions/check", json={"email": secret})
        assert check.json()["suppressed"] is False, check.text  # B's list is B's alone
        count += 2
    print(f"\ncross-tenant probes on the contact endpoints: {count}, all 404 without B's data")
    async with api_server.client(tenant_b.owner) as http:
        still = await http.get(f"{tenant_b.base}/contacts/{contact['id']}")
        assert still.status_code == 200, still.text
        job_now = (await http.get(f"{tenant_b.base}/contact-imports/{job['id']}")).json()
        assert job_now["state"] == "succeeded", job_now
        check = await http.post(f"{tenant_b.base}/suppressions/check", json={"email": secret})
        assert check.json()["suppressed"] is True, check.text
        lists = (await http.get(f"{tenant_b.base}/contact-lists")).json()["data"]
        assert [x["name"] for x in lists] == [f"b-{tag}"], lists
