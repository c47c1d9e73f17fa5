"""Each tenant's sender gets its own database login, plus the platform's other settings, through
a Secret of its own; an annotation on the Tenant rotates the passwords."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError

from penguinmails.common.keys import TokenKey
from penguinmails.operator.tenant import ROTATE_SENDER_ANNOTATION as ROTATE
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, wait_for

pytestmark = pytest.mark.integration

PLATFORM = "penguinmails-platform"
VALUES = {"PM_SUPPRESSION_KEY": "s3cr3t-suppression-key"}


def ready_condition(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    obj = api.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return dict(condition)
    return {}


def tenant_secret(core: client.CoreV1Api) -> dict[str, str] | None:
    try:
        copied = core.read_namespaced_secret("penguinmails-sender", "tenant-wired")
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return {k: base64.b64decode(v).decode() for k, v in copied.data.items()}


async def can_log_in(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidPasswordError:
        return False
    await conn.close()
    return True


async def test_sender_secret_is_issued_once_the_platform_secret_exists(
    operator_process: OperatorFactory,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    postgres_dsn: str,
    redis_url: str,
) -> None:
    try:
        core.create_namespace({"metadata": {"name": PLATFORM}})
    except ApiException as error:
        if error.status != 409:
            raise
    operator = operator_process(PM_SENDER_SECRET=f"{PLATFORM}/pm-sender")
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "wired"},
        "spec": {"tier": "starter", "contactEmail": "ops@wired.example.com"},
    }
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)

    missing = wait_for(
        lambda: (
            ready_condition(custom_objects, "wired").get("reason") == "SenderSecretMissing"
            and ready_condition(custom_objects, "wired")
        ),
        what="Ready=False naming the missing platform Secret",
    )
    assert missing["status"] == "False"
    assert f"{PLATFORM}/pm-sender" in missing["message"]
    assert "PM_SUPPRESSION_KEY" in missing["message"]

    core.create_namespaced_secret(
        PLATFORM,
        {
            "metadata": {"name": "pm-sender"},
            "stringData": {
                **VALUES,
                # Where senders connect, with the platform's logins: the tenant gets its own.
                "PM_DATABASE_URL": postgres_dsn,
                "PM_REDIS_URL": redis_url,
                "UNRELATED_KEY": "not for senders",
            },
        },
    )
    wait_for(
        lambda: ready_condition(custom_objects, "wired").get("status") == "True",
        timeout=60,
        what="Tenant Ready once the Secret exists",
    )
    copied = core.read_namespaced_secret("penguinmails-sender", "tenant-wired")
    assert copied.metadata.owner_references[0].kind == "Tenant"
    decoded = tenant_secret(core)
    assert decoded is not None
    dsn = decoded.pop("PM_DATABASE_URL")
    # Its own token key, derived from the platform's master secret, which it never gets.
    token_key = TokenKey.decode(decoded.pop("PM_TOKEN_KEY"))
    assert token_key.kid == 1
    tenant_redis = urlsplit(decoded.pop("PM_REDIS_URL"))
    assert decoded == {}  # nothing else: not the platform's master secret
    # The tenant's own login at the platform's database, never the platform's login.
    login, platform = urlsplit(dsn), urlsplit(postgres_dsn)
    assert (login.hostname, login.port, login.path) == (
        platform.hostname,
        platform.port,
        platform.path,
    )
    assert login.username and login.username.startswith("pm_tenant_")
    assert login.password and len(login.password) >= 40
    assert await can_log_in(dsn)
    assert tenant_redis.username == login.username and tenant_redis.port == urlsplit(redis_url).port
    assert tenant_redis.password and tenant_redis.password != login.password

    # Later reconciles (every 3 s here) keep the password: running senders keep working.
    await asyncio.sleep(7)
    assert (tenant_secret(core) or {}).get("PM_DATABASE_URL") == dsn
    assert await can_log_in(dsn)

    # Rotation, asked for on the Tenant: new passwords; the old ones stop working. A change
    # pass does it (the resync reads nothing: docs/scaling.md), and the value is recorded on
    # the Secret, so later passes keep the new passwords.
    custom_objects.patch_cluster_custom_object(
        GROUP, VERSION, "tenants", "wired", {"metadata": {"annotations": {ROTATE: "1"}}}
    )
    rotated = wait_for(
        lambda: (s := tenant_secret(core)) and s["PM_DATABASE_URL"] != dsn and s,
        timeout=60,
        what="new sender passwords",
    )
    new_login = urlsplit(rotated["PM_DATABASE_URL"])
    assert new_login.username == login.username
    assert new_login.password and new_login.password != login.password
    assert await can_log_in(rotated["PM_DATABASE_URL"])
    assert not await can_log_in(dsn)
    assert urlsplit(rotated["PM_REDIS_URL"]).password != tenant_redis.password
    # A later full pass (any change; here the spec's) keeps what the rotation issued.
    custom_objects.patch_cluster_custom_object(
        GROUP, VERSION, "tenants", "wired", {"spec": {"displayName": "Wired Inc."}}
    )
    wait_for(
        lambda: (
            (obj := custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", "wired"))
            .get("status", {})
            .get("observedGeneration")
            == obj["metadata"]["generation"]
        ),
        timeout=60,
        what="the spec change reconciled",
    )
    assert tenant_secret(core) == rotated

    status = str(custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", "wired"))
    secrets = (
        VALUES["PM_SUPPRESSION_KEY"],
        login.password,
        new_login.password,
        tenant_redis.password,
    )
    for secret in secrets:
        assert secret not in status
        assert secret not in operator.log()

    # Deleting the Tenant deletes its Redis user: a copy of its credentials no longer works.
    admin = Redis.from_url(redis_url)
    try:
        assert await admin.acl_getuser(tenant_redis.username) is not None
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", "wired")

        def gone() -> bool:
            try:
                custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", "wired")
            except ApiException as error:
                return bool(error.status == 404)
            return False

        wait_for(gone, timeout=60, what="the Tenant deleted (its finalizer ran)")
        assert await admin.acl_getuser(tenant_redis.username) is None
    finally:
        await admin.aclose()
    stale = Redis.from_url(rotated["PM_REDIS_URL"])
    try:
        with pytest.raises(AuthenticationError):
            await stale.ping()
    finally:
        await stale.aclose()
    operator.stop()
    operator.assert_no_errors()
