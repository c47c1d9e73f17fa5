"""The Tenant controller: namespace, quota, limits, network policy, RBAC, sender, database row.

One level-based `reconcile` serves create, update, resume and the resync timer: it states the
whole desired state every time, so a crash at any point followed by a restart converges, and
anything deleted behind our back (a quota, the sender Deployment) comes back on the next tick.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import kopf
from kubernetes.dynamic.exceptions import ConflictError, ResourceNotFoundError
from pydantic import ValidationError
from redis.asyncio import Redis

from penguinmails.api.v1alpha1 import TenantSpec
from penguinmails.api.v1alpha1.tiers import TIERS
from penguinmails.common.db.tenant_logins import (
    connection_limit,
    ensure_tenant_login,
    new_password,
    tenant_login_name,
    with_login,
)
from penguinmails.common.db.tenants import get_tenant, mark_tenant_deleted, upsert_tenant
from penguinmails.common.keys import MasterKeys
from penguinmails.common.settings import OperatorSettings
from penguinmails.common.tenant_redis import delete_tenant_redis_user, ensure_tenant_redis_user
from penguinmails.operator import conditions, metrics
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.conditions import Observed
from penguinmails.operator.context import Context
from penguinmails.operator.errors import (
    ConfigurationError,
    backoff_seconds,
    describe,
    describe_validation_error,
)
from penguinmails.operator.handlers import register_controller
from penguinmails.operator.kube import Kube
from penguinmails.operator.secret_access import apply_secret

PLURAL = "tenants"


async def _count_active_campaigns(kube: Kube, namespace: str) -> int:
    try:
        campaigns = await kube.list(res.TENANT_API_VERSION, "Campaign", namespace)
    except ResourceNotFoundError:
        return 0
    return sum(1 for campaign in campaigns if res.is_active_campaign(campaign))


async def _issue_sender_secret(ctx: Context, tenant: res.TenantRef, tenant_id: uuid.UUID) -> None:
    """Give the tenant's sender its own database and Redis logins and token key, in its own
    namespace.

    The platform Secret (PM_SENDER_SECRET) says where senders connect, and its logins are the
    platform's (the Redis one must be allowed ACL SETUSER); the logins in the tenant's copy are
    the tenant's own (`tenant_logins`, `tenant_redis`), never the platform's. Their passwords
    live only in that copy: kept while the copy holds them for the current login, issued anew
    when the copy is gone (the rotation, see docs/operations.md).
    """
    namespace, _, name = ctx.settings.sender_secret.partition("/")
    source = await ctx.kube.get("v1", "Secret", name, namespace or None)
    if source is None:
        raise ConfigurationError(
            "SenderSecretMissing",
            f"PM_SENDER_SECRET names the Secret {ctx.settings.sender_secret}, which does not "
            f"exist: create it with the keys {', '.join(res.SENDER_SECRET_KEYS)}",
        )
    data = dict(source.get("data") or {})
    missing = [key for key in res.SENDER_SECRET_KEYS if key not in data]
    if missing:
        raise ConfigurationError(
            "SenderSecretIncomplete",
            f"the Secret {ctx.settings.sender_secret} lacks {', '.join(missing)}: add them",
        )
    try:
        master = MasterKeys.parse(_decode(data["PM_SUPPRESSION_KEY"]))
    except ValueError as error:
        raise ConfigurationError(
            "SenderSecretInvalid", f"the Secret {ctx.settings.sender_secret}: {error}"
        ) from None
    current = ((await ctx.kube.get("v1", "Secret", res.SENDER_NAME, tenant.namespace)) or {}).get(
        "data"
    ) or {}
    role = await tenant_login_name(ctx.db, tenant_id)
    db_password = _password_for(role, current.get("PM_DATABASE_URL")) or new_password()
    limit = connection_limit(TIERS[tenant.tier].sender_max_replicas)
    role = await ensure_tenant_login(ctx.db, tenant_id, db_password, connections=limit)
    redis_password = _password_for(role, current.get("PM_REDIS_URL")) or new_password()
    platform_redis = _decode(data["PM_REDIS_URL"])
    admin = Redis.from_url(platform_redis)
    try:
        await ensure_tenant_redis_user(admin, role, tenant_id, redis_password)
    finally:
        await admin.aclose()
    data["PM_DATABASE_URL"] = _b64(with_login(_decode(data["PM_DATABASE_URL"]), role, db_password))
    data["PM_REDIS_URL"] = _b64(with_login(platform_redis, role, redis_password))
    # Its own token key, derived: never the platform's master secret (common.keys).
    data["PM_TOKEN_KEY"] = _b64(master.token_key(tenant_id).encode())
    await apply_secret(ctx.kube, res.sender_secret(tenant, data))


def _password_for(role: str | None, encoded_url: str | None) -> str | None:
    """The password in a tenant Secret's URL (base64, as stored) if it is `role`'s login."""
    if role is None or not encoded_url:
        return None
    parts = urlsplit(_decode(encoded_url))
    if parts.username is None or unquote(parts.username) != role or not parts.password:
        return None
    return unquote(parts.password)


def _decode(value: str) -> str:
    return base64.b64decode(value).decode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


async def reconcile(
    ctx: Context,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger | kopf.Logger,
) -> None:
    name = body.metadata.name
    generation = int(body.metadata.get("generation") or 0)
    status: Mapping[str, Any] = body.status or {}
    if not name:
        return
    try:
        spec = TenantSpec.model_validate(dict(body.spec))
    except ValidationError as error:
        message = describe_validation_error(error)
        conditions.write_status(
            patch,
            status,
            generation,
            [Observed("Ready", "False", "InvalidSpec", f"{message}; fix the Tenant's spec")],
        )
        previous = conditions.find(status.get("conditions"), "Ready") or {}
        if previous.get("reason") != "InvalidSpec":
            kopf.warn(body, reason="InvalidSpec", message=message)
        metrics.RECONCILE_ERRORS.labels(kind="Tenant", reason="InvalidSpec").inc()
        return  # Waits for a spec change; the resync timer re-checks anyway.

    tenant = res.TenantRef(name=name, uid=str(body.metadata.uid), tier=spec.tier)
    limits = TIERS[spec.tier]
    try:
        await ctx.kube.apply(res.namespace(tenant))
        active = await _count_active_campaigns(ctx.kube, tenant.namespace)
        replicas = res.desired_replicas(limits, suspended=spec.suspended, active_campaigns=active)
        # The children reference each other only by name, so they are applied concurrently.
        children = res.children(
            tenant,
            image=ctx.settings.sender_image,
            replicas=replicas,
            egress=res.TenantEgress.from_env(),
        )
        await asyncio.gather(*(ctx.kube.apply(manifest) for manifest in children))
        tenant_id = await upsert_tenant(
            ctx.db,
            name=name,
            tier=spec.tier.value,
            namespace=tenant.namespace,
            display_name=spec.display_name,
            contact_email=spec.contact_email,
            suspended=spec.suspended,
        )
        if ctx.settings.sender_secret:
            await _issue_sender_secret(ctx, tenant, tenant_id)
    except Exception as error:
        failure = describe(error)
        logger.warning("Tenant %s not reconciled: %s", name, failure.message)
        conditions.write_status(
            patch, status, generation, [Observed("Ready", "False", failure.reason, failure.message)]
        )
        kopf.warn(body, reason=failure.reason, message=failure.message)
        metrics.RECONCILE_ERRORS.labels(kind="Tenant", reason=failure.reason).inc()
        raise kopf.TemporaryError(failure.message, delay=backoff_seconds(retry)) from error

    observed = [Observed("Ready", "True", "Reconciled", f"namespace {tenant.namespace} is ready")]
    if spec.suspended:
        why = spec.suspend_reason or "no reason given"
        observed.append(
            Observed(
                "Suspended",
                "True",
                "SuspendedBySpec",
                f"sending stopped and the sender scaled to 0: {why}",
            )
        )
    else:
        observed.append(Observed("Suspended", "False", "Active", "the tenant may send"))

    _announce_changes(body, status, spec_tier=spec.tier.value, suspended=spec.suspended)
    conditions.write_status(
        patch,
        status,
        generation,
        observed,
        namespace=tenant.namespace,
        tier=spec.tier.value,
        senderReplicas=replicas,
    )


def _announce_changes(
    body: kopf.Body, status: Mapping[str, Any], *, spec_tier: str, suspended: bool
) -> None:
    """Events mark what happened, once: compare with what status recorded last time."""
    previous_tier = status.get("tier")
    if not status.get("namespace"):
        kopf.info(
            body, reason="Provisioned", message=f"namespace tenant-{body.metadata.name} ready"
        )
    elif previous_tier and previous_tier != spec_tier:
        kopf.info(
            body, reason="TierChanged", message=f"resized from {previous_tier} to {spec_tier}"
        )
    was = conditions.find(status.get("conditions"), "Suspended")
    was_suspended = bool(was and was.get("status") == "True")
    if suspended and not was_suspended:
        kopf.warn(body, reason="Suspended", message="sender scaled to 0 while suspended")
    elif was is not None and was_suspended and not suspended:
        kopf.info(body, reason="Resumed", message="the tenant may send again")


async def cleanup(
    ctx: Context, body: kopf.Body, retry: int, logger: kopf.Logger | logging.Logger
) -> None:
    """Delete the namespace and keep the tenant's rows, marked deleted, for the retention period.

    A namespace already terminating (409) is progress, not a failure: a retry after the DELETE
    was accepted must still mark the rows. What the namespace holds is cleaned up by its own
    finalizers while it terminates; an SmtpServer keeps the Secret it needs to terminate its
    VPS (operator/smtpserver.py, CredentialsHold).
    """
    name = body.metadata.name
    if not name:
        return
    try:
        # 409: already terminating, the namespace controller is removing it.
        with contextlib.suppress(ConflictError):
            await ctx.kube.delete("v1", "Namespace", res.namespace_for(name))
        await _delete_redis_user(ctx, name, logger)
        await mark_tenant_deleted(ctx.db, name, ctx.settings.tenant_data_retention)
    except Exception as error:
        failure = describe(error)
        logger.warning("Tenant %s not cleaned up yet: %s", name, failure.message)
        raise kopf.TemporaryError(failure.message, delay=backoff_seconds(retry)) from error
    logger.info(
        "Tenant %s deleted; its data is kept for %s", name, ctx.settings.tenant_data_retention
    )


async def _delete_redis_user(ctx: Context, name: str, logger: kopf.Logger | logging.Logger) -> None:
    """The tenant's Redis user goes with it (unlike its rows, nothing is kept: its keys are
    throttle state). Its password was only in the namespace being deleted, but a copy taken
    before (a leaked Secret) must not keep reaching the tenant's keys, nor the user name be
    inherited. Without the platform Secret no user was ever created (`_issue_sender_secret`
    needs it), so there is nothing to delete."""
    tenant = await get_tenant(ctx.db, name)
    role = await tenant_login_name(ctx.db, tenant.id) if tenant is not None else None
    if role is None or not ctx.settings.sender_secret:
        return
    namespace, _, secret = ctx.settings.sender_secret.partition("/")
    source = await ctx.kube.get("v1", "Secret", secret, namespace or None)
    encoded = ((source or {}).get("data") or {}).get("PM_REDIS_URL")
    if not encoded:
        logger.info("Tenant %s: no platform Redis configured, no Redis user to delete", name)
        return
    admin = Redis.from_url(_decode(encoded))
    try:
        await delete_tenant_redis_user(admin, role)
    finally:
        await admin.aclose()


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Attach the Tenant handlers; the resync interval comes from the settings."""

    async def run(
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        memo: kopf.Memo,
        logger: kopf.Logger,
        timer: bool,
    ) -> None:
        with metrics.observe("Tenant"):
            await reconcile(memo.context, body, patch, retry, logger)

    async def delete(*, body: kopf.Body, retry: int, memo: kopf.Memo, logger: kopf.Logger) -> None:
        await cleanup(memo.context, body, retry, logger)

    register_controller(
        registry, plural=PLURAL, interval=settings.resync_seconds, reconcile=run, cleanup=delete
    )
