"""A hostile tenant against the real stack: with tenant A's own credentials, reach tenant B.

The operator provisions two tenants. Each tenant's credentials are read the way its sender pod
reads them: with a token of the tenant's sender ServiceAccount (TokenRequest API), from the
Secret `penguinmails-sender` in its namespace. Tenant B seeds its data with its own login; then
tenant A tries to read, change or delete B's contacts, lists, ledger, suppression list and
campaigns, with ordinary SQL and with the known tricks (settings, SET ROLE, SET SESSION
AUTHORIZATION, functions, temporary objects, COPY, large objects, objects in the shared schema,
policies, catalogs), and to reach B's Kubernetes Secrets. Every attempt must fail; the suite
counts them. No superuser connection is used on a tenant's behalf.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client
from kubernetes.client.rest import ApiException
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ResponseError as RedisResponseError

from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import CampaignPlan, Relay, enqueue, upsert_campaign
from penguinmails.common.db.migrate import MIGRATION_LOCK_KEY, migrate
from penguinmails.common.db.tenant_logins import connection_limit
from penguinmails.common.suppression import SuppressionReason, address_hash, suppress
from tests.integration.conftest import (
    GROUP,
    VERSION,
    OperatorFactory,
    OperatorProcess,
    wait_for,
)
from tests.integration.sender_support import platform_sender_secret

pytestmark = pytest.mark.integration

PLATFORM = "penguinmails-platform"
PLATFORM_SECRET = "pm-sender-isolation"
KEY = b"isolation-test-suppression-key-0123456789"
SENDER = "penguinmails-sender"
B_CONTACTS = 5


@dataclass
class Tenant:
    name: str
    namespace: str
    secret: dict[str, str]
    token: str

    @property
    def dsn(self) -> str:
        return self.secret["PM_DATABASE_URL"]

    @property
    def role(self) -> str:
        return str(urlsplit(self.dsn).username)


@dataclass(frozen=True)
class Tenants:
    a: Tenant
    b: Tenant
    operator: OperatorProcess


@dataclass
class Attempts:
    """Every try counts once; each helper fails the test if the try got through."""

    made: list[str] = field(default_factory=list)

    async def refused(self, what: str, action: Awaitable[Any]) -> asyncpg.PostgresError:
        self.made.append(what)
        try:
            result = await action
        except asyncpg.PostgresError as error:
            return error
        raise AssertionError(f"{what}: expected a refusal, got {result!r}")

    async def sees_nothing_of(self, what: str, rows: Awaitable[list[asyncpg.Record]]) -> None:
        self.made.append(what)
        found = await rows
        assert found == [], f"{what}: tenant A saw {found!r}"

    def forbidden(self, what: str, call: Callable[[], Any]) -> None:
        self.made.append(what)
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == 403, f"{what}: {caught.value.status} {caught.value.reason}"


def service_account_client(admin: client.ApiClient, token: str) -> client.ApiClient:
    """An API client that authenticates only with `token`, as a pod would."""
    # A new Configuration, not a copy: the admin's may carry a hook that re-applies its token.
    config = client.Configuration(host=admin.configuration.host)
    config.ssl_ca_cert = admin.configuration.ssl_ca_cert
    config.verify_ssl = admin.configuration.verify_ssl
    config.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(config)


def sender_token(core: client.CoreV1Api, namespace: str) -> str:
    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    response = core.create_namespaced_service_account_token(SENDER, namespace, request)
    return str(response.status.token)


def ready(custom_objects: client.CustomObjectsApi, name: str) -> bool:
    obj = custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


@pytest.fixture(scope="module")
def tenants(
    operator_process: OperatorFactory,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    postgres_dsn: str,
    redis_url: str,
) -> Iterator[Tenants]:
    reference = platform_sender_secret(
        core,
        PLATFORM,
        PLATFORM_SECRET,
        database_url=postgres_dsn,
        redis_url=redis_url,
        suppression_key=KEY.decode(),
    )
    operator = operator_process(PM_SENDER_SECRET=reference)
    names = [f"iso-a-{uuid.uuid4().hex[:6]}", f"iso-b-{uuid.uuid4().hex[:6]}"]
    for name in names:
        custom_objects.create_cluster_custom_object(
            GROUP,
            VERSION,
            "tenants",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Tenant",
                "metadata": {"name": name},
                "spec": {"tier": "starter", "contactEmail": f"ops@{name}.example.com"},
            },
        )
    found: list[Tenant] = []
    for name in names:
        wait_for(
            functools.partial(ready, custom_objects, name), timeout=90, what=f"Tenant {name} Ready"
        )
        namespace = f"tenant-{name}"
        token = sender_token(core, namespace)
        # As the tenant's pod: its own ServiceAccount reads its own Secret.
        with service_account_client(api_client, token) as pod_api:
            secret = client.CoreV1Api(pod_api).read_namespaced_secret(SENDER, namespace)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        found.append(Tenant(name, namespace, data, token))
    yield Tenants(found[0], found[1], operator)
    for name in names:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
    operator.stop()
    operator.assert_no_errors()


@dataclass
class Seeded:
    tenant_id: uuid.UUID
    list_id: uuid.UUID
    campaign_uid: uuid.UUID
    large_object: int
    snapshot: dict[str, list[tuple[Any, ...]]]


SNAPSHOT_QUERIES = {
    "contacts": "SELECT id, list_id, email, fields::text FROM contacts ORDER BY id",
    "contact_lists": "SELECT id, name FROM contact_lists ORDER BY id",
    "suppressions": "SELECT address_hash, reason FROM suppressions ORDER BY address_hash",
    "campaigns": "SELECT uid, sending, spec::text, pause_reason FROM campaigns ORDER BY uid",
    "deliveries": "SELECT id, state, attempts FROM deliveries ORDER BY id",
    "audit": "SELECT id, kind FROM tenant_audit_events ORDER BY id",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: [tuple(row) for row in await conn.fetch(query)]
        for name, query in SNAPSHOT_QUERIES.items()
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded_b(tenants: Tenants) -> AsyncIterator[Seeded]:
    """Tenant B's data, written with B's own login (its rows default to its own tenant)."""
    b = tenants.b
    conn = await asyncpg.connect(b.dsn)
    try:
        tenant_id = await conn.fetchval("SELECT id FROM tenants")
        csv = "email,first_name\n" + "".join(
            f"b{i}@victim.example,B{i}\n" for i in range(B_CONTACTS)
        )
        async with conn.transaction():
            report = await import_contacts(conn, "customers", csv.encode(), KEY)
        assert report.imported == B_CONTACTS
        list_id = await conn.fetchval("SELECT id FROM contact_lists WHERE name = 'customers'")
        await suppress(conn, address_hash(KEY, "gone@victim.example"), SuppressionReason.MANUAL)
        uid = uuid.uuid4()
        plan = CampaignPlan(
            from_address="sales@victim.example",
            subject="Hello",
            text="Hi",
            domain="victim.example",
            dkim_secret="victim-dkim",
            unsubscribe_url="https://u.example/u",
            unsubscribe_mailto="unsubscribe@victim.example",
            postal_address="1 Victim Road",
            relays=[Relay(name="relay", host="relay.victim.example", port=587)],
        )
        await upsert_campaign(conn, uid=uid, namespace=b.namespace, name="launch", plan=plan)
        assert await enqueue(conn, uid, ["customers"]) == B_CONTACTS
        await conn.execute("INSERT INTO tenant_audit_events (kind, message) VALUES ('x', 'y')")
        large_object = await conn.fetchval("SELECT lo_from_bytea(0, 'b private'::bytea)")
        b_redis = Redis.from_url(b.secret["PM_REDIS_URL"])
        try:
            await b_redis.hset(f"tenant:{tenant_id}:tb:provider:google", "tokens", "7")
        finally:
            await b_redis.aclose()
        yield Seeded(tenant_id, list_id, uid, large_object, await snapshot(conn))
    finally:
        await conn.close()


async def test_tenant_a_cannot_reach_tenant_b(
    tenants: Tenants,
    seeded_b: Seeded,
    api_client: client.ApiClient,
    postgres_dsn: str,
) -> None:
    a, b = tenants.a, tenants.b
    assert a.role != b.role and a.role.startswith("pm_tenant_")
    attempts = Attempts()
    a_id = await sql_attempts(attempts, a, b, seeded_b)
    await lock_attempts(attempts, a, postgres_dsn)
    await redis_attempts(attempts, a, b, a_id, seeded_b.tenant_id)
    kube_attempts(attempts, api_client, a, b)

    # B's data is exactly what B wrote.
    b_conn = await asyncpg.connect(b.dsn)
    try:
        assert await snapshot(b_conn) == seeded_b.snapshot
        assert await b_conn.fetchval("SELECT lo_get($1)", seeded_b.large_object) == b"b private"
    finally:
        await b_conn.close()
    print(f"\n{len(attempts.made)} cross-tenant attempts, all refused")
    assert len(attempts.made) >= 30
    assert len(set(attempts.made)) == len(attempts.made)


async def redis_attempts(
    attempts: Attempts, a: Tenant, b: Tenant, a_id: uuid.UUID, b_id: uuid.UUID
) -> None:
    """A's Redis user against B's keys, the keyspace and the server."""
    b_key = f"tenant:{b_id}:tb:provider:google"
    r = Redis.from_url(a.secret["PM_REDIS_URL"])
    a_prefix = f"tenant:{a_id}:"
    try:
        await r.set(f"{a_prefix}own", "1")  # the control: its own keys work
        tries: dict[str, Callable[[], Awaitable[Any]]] = {
            "redis GET B's key": lambda: r.hgetall(b_key),
            "redis overwrite B's bucket": lambda: r.hset(b_key, "tokens", "100000"),
            "redis DEL B's key": lambda: r.delete(b_key),
            "redis EVAL on B's key": lambda: r.eval("return redis.call('DEL', KEYS[1])", 1, b_key),
            "redis EVAL naming B's key inside": lambda: r.eval(
                f"return redis.call('HGETALL', '{b_key}')", 0
            ),
            "redis COPY into B's prefix": lambda: r.copy(f"{a_prefix}own", f"tenant:{b_id}:x"),
            "redis RENAME into B's prefix": lambda: r.rename(f"{a_prefix}own", f"tenant:{b_id}:x"),
            "redis KEYS": lambda: r.keys("*"),
            "redis SCAN": lambda: r.scan(0),
            "redis RANDOMKEY": r.randomkey,
            "redis DBSIZE": r.dbsize,
            "redis FLUSHALL": r.flushall,
            "redis CONFIG SET": lambda: r.config_set("maxmemory", "1"),
            "redis ACL SETUSER itself": lambda: r.acl_setuser(a.role, keys=["~*"]),
            "redis ACL LIST": r.acl_list,
            "redis CLIENT LIST": r.client_list,
            "redis PUBLISH": lambda: r.publish("penguinmails", "x"),
            "redis FUNCTION FLUSH": r.function_flush,
        }
        for what, call in tries.items():
            attempts.made.append(what)
            with pytest.raises(RedisResponseError) as caught:
                await call()
            refusal = str(caught.value)
            assert any(word in refusal for word in ("NOPERM", "no permissions", "can't access")), (
                what,
                refusal,
            )
        attempts.made.append("redis AUTH as B with A's password")
        with pytest.raises((RedisAuthenticationError, RedisResponseError)):
            await r.auth(str(urlsplit(a.secret["PM_REDIS_URL"]).password), b.role)
    finally:
        await r.aclose()
    b_redis = Redis.from_url(b.secret["PM_REDIS_URL"])
    try:
        assert await b_redis.hgetall(b_key) == {b"tokens": b"7"}
    finally:
        await b_redis.aclose()


async def test_b_still_works_with_its_own_login(tenants: Tenants, seeded_b: Seeded) -> None:
    """The control: the same queries that showed A nothing show B its rows."""
    b = tenants.b
    conn = await asyncpg.connect(b.dsn)
    try:
        rows = await conn.fetch(
            "SELECT email FROM contacts WHERE tenant_id = $1", seeded_b.tenant_id
        )
        assert len(rows) == B_CONTACTS
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == B_CONTACTS
        assert await conn.fetchval("SELECT name FROM tenants") == b.name
    finally:
        await conn.close()


async def lock_attempts(attempts: Attempts, a: Tenant, platform_dsn: str) -> None:
    """Locks that would stall the platform for everybody (operator start-up, reconciles)."""
    conn = await asyncpg.connect(a.dsn)
    try:
        for what, statement in {
            "lock the migrations table": "LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE",
            "lock its own tenant row": "SELECT FROM tenants FOR UPDATE",
            "lock the contacts of everybody": "LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE",
            "lock the ledger of everybody": "LOCK TABLE deliveries IN SHARE MODE",
        }.items():
            transaction = conn.transaction()
            await transaction.start()
            await attempts.refused(what, conn.execute(statement))
            await transaction.rollback()
        # Any login may take an advisory lock: holding the one migrations used to queue on
        # must not keep the operator from migrating (it now locks the table instead).
        attempts.made.append("hold the migration advisory lock")
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        async with asyncio.timeout(30):
            assert await migrate(platform_dsn) == []
    finally:
        await conn.close()


async def sql_attempts(attempts: Attempts, a: Tenant, b: Tenant, seeded_b: Seeded) -> uuid.UUID:
    """A's PostgreSQL login against B's rows; returns A's tenant id."""
    b_id = str(seeded_b.tenant_id)
    conn = await asyncpg.connect(a.dsn)
    try:
        a_id = await conn.fetchval("SELECT id FROM tenants")
        assert a_id is not None and a_id != seeded_b.tenant_id
        a_list = await conn.fetchval(
            "INSERT INTO contact_lists (name) VALUES ('mine') RETURNING id"
        )
        b_contacts = "SELECT email FROM contacts WHERE tenant_id = $1"

        # Plain reads of every tenant-owned table, by B's id.
        for table in ("contacts", "contact_lists", "suppressions", "campaigns", "deliveries"):
            await attempts.sees_nothing_of(
                f"read {table}",
                conn.fetch(f"SELECT * FROM {table} WHERE tenant_id = $1", seeded_b.tenant_id),  # noqa: S608
            )
        await attempts.sees_nothing_of(
            "read B's tenant row", conn.fetch("SELECT * FROM tenants WHERE id = $1", b_id)
        )
        await attempts.sees_nothing_of(
            "read B's audit events",
            conn.fetch("SELECT * FROM tenant_audit_events WHERE tenant_id = $1", b_id),
        )

        # The setting the policies used to trust.
        await conn.execute("SELECT set_config('penguinmails.tenant_id', $1, false)", b_id)
        await attempts.sees_nothing_of("set_config then read", conn.fetch(b_contacts, b_id))
        assert await conn.fetchval("SELECT current_tenant_id()") == a_id
        async with conn.transaction():
            await conn.execute(f"SET LOCAL penguinmails.tenant_id = '{b_id}'")
            await attempts.sees_nothing_of("SET LOCAL then read", conn.fetch(b_contacts, b_id))
        # The role tenant_scope() switches platform logins to: not for a tenant's login.
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT set_config('penguinmails.tenant_id', $1, true)", b_id)
        await attempts.refused(
            "SET ROLE penguinmails_app + B's id", conn.execute("SET LOCAL ROLE penguinmails_app")
        )
        await transaction.rollback()
        await conn.execute("RESET ROLE")
        await attempts.sees_nothing_of("RESET ROLE then read", conn.fetch(b_contacts, b_id))
        await conn.execute("RESET ALL")

        # Becoming someone else.
        await attempts.refused("SET ROLE to B's login", conn.execute(f'SET ROLE "{b.role}"'))
        for target in ("postgres", "penguinmails_platform"):
            await attempts.refused(f"SET ROLE {target}", conn.execute(f"SET ROLE {target}"))
        await attempts.refused(
            "SET SESSION AUTHORIZATION B",
            conn.execute(f'SET SESSION AUTHORIZATION "{b.role}"'),
        )
        await attempts.refused(
            "GRANT B's login to A", conn.execute(f'GRANT "{b.role}" TO "{a.role}"')
        )
        await attempts.refused(
            "GRANT penguinmails_platform to A",
            conn.execute(f'GRANT penguinmails_platform TO "{a.role}"'),
        )
        await attempts.refused(
            "ALTER ROLE A BYPASSRLS", conn.execute(f'ALTER ROLE "{a.role}" BYPASSRLS')
        )
        await attempts.refused(
            "ALTER ROLE B's password", conn.execute(f"ALTER ROLE \"{b.role}\" PASSWORD 'x'")
        )
        await attempts.refused("read the login map", conn.fetch("SELECT * FROM tenant_roles"))
        await attempts.refused("read password hashes", conn.fetch("SELECT * FROM pg_authid"))

        # Planting code or objects where the platform looks, or shadowing what policies call.
        await attempts.refused(
            "replace current_tenant_id()",
            conn.execute(
                "CREATE OR REPLACE FUNCTION public.current_tenant_id() RETURNS uuid "
                f"LANGUAGE sql AS $$ SELECT '{b_id}'::uuid $$"
            ),
        )
        await attempts.refused(
            "SECURITY DEFINER function in public",
            conn.execute(
                "CREATE FUNCTION public.peek() RETURNS SETOF contacts LANGUAGE sql "
                "SECURITY DEFINER AS $$ SELECT * FROM contacts $$"
            ),
        )
        await attempts.refused(
            "table in public", conn.execute("CREATE TABLE public.drop_box (x text)")
        )
        await conn.execute(
            "CREATE FUNCTION pg_temp.current_tenant_id() RETURNS uuid "
            f"LANGUAGE sql AS $$ SELECT '{b_id}'::uuid $$"
        )
        await attempts.sees_nothing_of(
            "temporary current_tenant_id() shadow", conn.fetch(b_contacts, b_id)
        )
        await attempts.refused(
            "disable row-level security",
            conn.execute("ALTER TABLE contacts DISABLE ROW LEVEL SECURITY"),
        )
        await attempts.refused(
            "drop the policy", conn.execute("DROP POLICY tenant_isolation ON contacts")
        )
        await attempts.refused(
            "add a permissive policy",
            conn.execute("CREATE POLICY open ON contacts USING (true)"),
        )
        await attempts.refused("CREATE EXTENSION dblink", conn.execute("CREATE EXTENSION dblink"))

        # COPY, server files, large objects.
        copied: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            copied.append(chunk)

        attempts.made.append("COPY contacts TO STDOUT")
        await conn.copy_from_table("contacts", output=sink)
        assert b"victim.example" not in b"".join(copied)
        await attempts.refused(
            "COPY FROM STDIN into contacts with B's id",
            conn.copy_records_to_table(
                "contacts",
                records=[(b_id, seeded_b.list_id, "planted@victim.example")],
                columns=["tenant_id", "list_id", "email"],
            ),
        )
        await attempts.refused(
            "COPY TO a server file",
            conn.execute("COPY (SELECT 1) TO '/tmp/pm-isolation-copy'"),
        )
        await attempts.refused(
            "COPY FROM PROGRAM", conn.execute("COPY contacts (email) FROM PROGRAM 'id'")
        )
        await attempts.refused("pg_read_file", conn.fetch("SELECT pg_read_file('PG_VERSION')"))
        await attempts.refused(
            "lo_import a server file", conn.fetch("SELECT lo_import('/etc/hostname')")
        )
        await attempts.refused(
            "read B's large object", conn.fetch("SELECT lo_get($1)", seeded_b.large_object)
        )
        await attempts.refused(
            "overwrite B's large object",
            conn.fetch("SELECT lo_put($1, 0, 'x'::bytea)", seeded_b.large_object),
        )

        # Writes into and over B's data.
        await attempts.refused(
            "insert a contact for B",
            conn.execute(
                "INSERT INTO contacts (tenant_id, list_id, email) VALUES ($1, $2, 'x@e.example')",
                seeded_b.tenant_id,
                seeded_b.list_id,
            ),
        )
        await attempts.refused(
            "point A's contact at B's list",
            conn.execute(
                "INSERT INTO contacts (list_id, email) VALUES ($1, 'x@e.example')",
                seeded_b.list_id,
            ),
        )
        await attempts.refused(
            "suppress for B",
            conn.execute(
                "INSERT INTO suppressions (tenant_id, address_hash, reason) "
                "VALUES ($1, $2, 'manual')",
                seeded_b.tenant_id,
                address_hash(KEY, "b0@victim.example"),
            ),
        )
        await attempts.refused(
            "insert a campaign for B",
            conn.execute(
                "INSERT INTO campaigns (uid, tenant_id, namespace, name, spec) "
                "VALUES ($1, $2, 'x', 'x', '{}')",
                uuid.uuid4(),
                seeded_b.tenant_id,
            ),
        )
        await attempts.refused(
            "insert a delivery into B's campaign",
            conn.execute(
                "INSERT INTO deliveries (tenant_id, campaign_uid, address_hash) "
                "VALUES ($1, $2, $3)",
                seeded_b.tenant_id,
                seeded_b.campaign_uid,
                address_hash(KEY, "x@e.example"),
            ),
        )
        await attempts.refused(
            "move A's list to B", conn.execute("UPDATE contact_lists SET tenant_id = $1", b_id)
        )
        changes = {
            "update B's contacts": "UPDATE contacts SET fields = '{\"x\": 1}' WHERE tenant_id = $1",
            "delete B's contacts": "DELETE FROM contacts WHERE tenant_id = $1",
            "delete B's suppressions": "DELETE FROM suppressions WHERE tenant_id = $1",
            "stop B's campaign": "UPDATE campaigns SET sending = false WHERE tenant_id = $1",
            "mark B's deliveries sent": "UPDATE deliveries SET state = 'sent' WHERE tenant_id = $1",
            "delete B's lists": "DELETE FROM contact_lists WHERE tenant_id = $1",
        }
        for what, statement in changes.items():
            attempts.made.append(what)
            try:  # refused outright (a tenant may not DELETE), or touching none of B's rows
                status = await conn.execute(statement, b_id)
            except asyncpg.InsufficientPrivilegeError:
                continue
            assert status.endswith(" 0"), f"{what}: {status}"

        # Another tenant's sessions stay opaque.
        await attempts.sees_nothing_of(
            "B's queries in pg_stat_activity",
            conn.fetch(
                "SELECT query FROM pg_stat_activity WHERE usename = $1 "
                "AND query NOT LIKE '<insufficient privilege>'",
                b.role,
            ),
        )
        # A default on A's own login, honoured at the next connection, changes nothing either
        # (if PostgreSQL lets a login set it on itself at all).
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f"ALTER ROLE \"{a.role}\" SET penguinmails.tenant_id = '{b_id}'")
        assert a_list is not None
    finally:
        await conn.close()
    # Exhausting the server's connections for everybody: the login's limit stops it first.
    limit = connection_limit(TIERS[Tier.STARTER].sender_max_replicas)
    held = [await asyncpg.connect(a.dsn) for _ in range(limit)]
    try:
        await attempts.refused("one connection over its limit", asyncpg.connect(a.dsn))
    finally:
        for extra in held:
            await extra.close()
    again = await asyncpg.connect(a.dsn)
    try:
        await attempts.sees_nothing_of(
            "role default for the setting",
            again.fetch("SELECT email FROM contacts WHERE tenant_id = $1", b_id),
        )
        await again.execute(f'ALTER ROLE "{a.role}" RESET ALL')
    finally:
        await again.close()
    return uuid.UUID(str(a_id))


def kube_attempts(attempts: Attempts, api_client: client.ApiClient, a: Tenant, b: Tenant) -> None:
    """A's sender ServiceAccount against B's namespace and the platform's Secrets."""
    with service_account_client(api_client, a.token) as pod_api:
        as_a = client.CoreV1Api(pod_api)
        attempts.forbidden(
            "read B's sender Secret", lambda: as_a.read_namespaced_secret(SENDER, b.namespace)
        )
        attempts.forbidden("list B's Secrets", lambda: as_a.list_namespaced_secret(b.namespace))
        attempts.forbidden("list all Secrets", as_a.list_secret_for_all_namespaces)
        attempts.forbidden(
            "read the platform Secret",
            lambda: as_a.read_namespaced_secret(PLATFORM_SECRET, PLATFORM),
        )
        attempts.forbidden(
            "write a Secret in B's namespace",
            lambda: as_a.create_namespaced_secret(
                b.namespace, {"metadata": {"name": "planted"}, "stringData": {"k": "v"}}
            ),
        )
        attempts.forbidden(
            "token for B's ServiceAccount",
            lambda: as_a.create_namespaced_service_account_token(
                SENDER, b.namespace, {"spec": {"audiences": []}}
            ),
        )
        attempts.forbidden(
            "read B's campaigns",
            lambda: client.CustomObjectsApi(pod_api).list_namespaced_custom_object(
                GROUP, VERSION, b.namespace, "campaigns"
            ),
        )
        attempts.forbidden(
            "grant itself rights in its namespace",
            lambda: client.RbacAuthorizationV1Api(pod_api).create_namespaced_role_binding(
                a.namespace,
                {
                    "metadata": {"name": "escalate"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "cluster-admin",
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": SENDER, "namespace": a.namespace}
                    ],
                },
            ),
        )


def test_no_credential_in_a_log_event_or_status(
    tenants: Tenants, custom_objects: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    """What the operator issued (passwords, token keys) and the platform's master secret
    appear nowhere but in the tenants' Secrets."""
    secrets = [KEY.decode()]
    for tenant in (tenants.a, tenants.b):
        secrets += [
            str(urlsplit(tenant.secret["PM_DATABASE_URL"]).password),
            str(urlsplit(tenant.secret["PM_REDIS_URL"]).password),
            tenant.secret["PM_TOKEN_KEY"],
            tenant.secret["PM_TOKEN_KEY"].partition(":")[2],
        ]
    places = {"operator log": tenants.operator.log()}
    for tenant in (tenants.a, tenants.b):
        obj = custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", tenant.name)
        places[f"{tenant.name} status"] = str(obj.get("status"))
        events = core.list_namespaced_event(tenant.namespace).items
        events += core.list_event_for_all_namespaces(
            field_selector=f"involvedObject.name={tenant.name}"
        ).items
        places[f"{tenant.name} events"] = " ".join(str(e.message) for e in events)
    assert len(places["operator log"]) > 0
    for where, text in places.items():
        for secret in secrets:
            assert len(secret) >= 16 and secret not in text, f"a credential in the {where}"
