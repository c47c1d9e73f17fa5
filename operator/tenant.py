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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import kopf
import stripe
from kubernetes.dynamic.exceptions import ConflictError, ResourceNotFoundError
from pydantic import ValidationError
from redis.asyncio import Redis

from penguinmails.api.billing.plans import allowance_for
from penguinmails.api.v1alpha1 import TenantSpec
from penguinmails.api.v1alpha1.tiers import TIERS, Tier
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
from penguinmails.operator import conditions, metrics, notices, usage
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
SCHEDULING_ANNOTATION = f"{res.GROUP}/sender-scheduling"
"""Set on a Tenant when one of its sender pods becomes (un)schedulable, so that its status says
so at once rather than at the next resync (`watch_sender_scheduling`)."""


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
        sent = await _usage(ctx, name, spec, tenant_id, logger)
        # Scaled to 0, whatever sender pods remain are on their way out: nothing to ask.
        pods = await ctx.kube.list("v1", "Pod", tenant.namespace) if replicas else []
        placement = res.sender_placement(pods)
    except Exception as error:
        failure = describe(error)
        logger.warning("Tenant %s not reconciled: %s", name, failure.message)
        conditions.write_status(
            patch, status, generation, [Observed("Ready", "False", failure.reason, failure.message)]
        )
        kopf.warn(body, reason=failure.reason, message=failure.message)
        metrics.RECONCILE_ERRORS.labels(kind="Tenant", reason=failure.reason).inc()
        raise kopf.TemporaryError(failure.message, delay=backoff_seconds(retry)) from error

    observed = _senders_observed(spec.tier, tenant.namespace, placement)
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
    _announce_scheduling(body, status, observed)
    conditions.write_status(
        patch,
        status,
        generation,
        observed,
        namespace=tenant.namespace,
        tier=spec.tier.value,
        senderReplicas=replicas,
        emailsSentThisMonth=sent,
    )


async def _usage(
    ctx: Context,
    name: str,
    spec: TenantSpec,
    tenant_id: uuid.UUID,
    logger: logging.Logger | kopf.Logger,
) -> int:
    """This month's sent messages; past a plan that allows overage, the excess goes to Stripe;
    the notices at 80/95/100% of the allowance (operator/notices.py).

    A failed report is retried on the next pass: it must not hold up the rest of the Tenant.
    """
    now = datetime.now(UTC)
    sent = await usage.month_usage(ctx.db, tenant_id, now)
    allowance = await allowance_for(ctx.db, spec.tier)
    customer = spec.billing.stripe_customer_id if spec.billing else None
    if allowance.overage_allowed and customer and sent > allowance.emails_per_month:
        try:
            await usage.report_overage(
                ctx.db,
                tenant=name,
                customer_id=customer,
                overage=sent - allowance.emails_per_month,
                period=usage.month_start(now).date(),
            )
        except stripe.StripeError as error:
            logger.warning("overage of Tenant %s not reported yet: %s", name, error.user_message)
    await notices.notify(
        ctx.db,
        tenant_id,
        tenant=name,
        tier=spec.tier.value,
        contact_email=str(spec.contact_email),
        sent=sent,
        allowance=allowance,
        period=usage.month_start(now).date(),
        settings=ctx.settings.notices,
    )
    return sent


def _senders_observed(tier: Tier, namespace: str, placement: res.SenderPlacement) -> list[Observed]:
    """Ready and SendersScheduled: a tenant whose senders find no node cannot send, so it is not
    Ready, and says why in the scheduler's words (node counts, labels and taints: no secrets)."""
    if placement.unschedulable:
        message = (
            f"{placement.unschedulable} of {placement.pods} sender pods cannot be scheduled: "
            f"{placement.scheduler_message or 'no node fits them'}; {res.unschedulable_hint(tier)}"
        )
        return [
            Observed("Ready", "False", "SendersUnschedulable", message),
            Observed("SendersScheduled", "False", "Unschedulable", message),
        ]
    if placement.pods:
        scheduled = Observed(
            "SendersScheduled",
            "True",
            "Scheduled",
            f"no sender pod is waiting for a node ({placement.pods} running or starting)",
        )
    else:
        scheduled = Observed(
            "SendersScheduled", "True", "NoSenders", "no sender pod runs: no campaign is sending"
        )
    return [Observed("Ready", "True", "Reconciled", f"namespace {namespace} is ready"), scheduled]


def _announce_scheduling(
    body: kopf.Body, status: Mapping[str, Any], observed: list[Observed]
) -> None:
    """One event when the senders stop finding a node, one when they find one again."""
    now = next(o for o in observed if o.type == "SendersScheduled")
    was = conditions.find(status.get("conditions"), "SendersScheduled") or {}
    if now.status == "False" and was.get("status") != "False":
        kopf.warn(body, reason="SendersUnschedulable", message=now.message)
    elif now.status == "True" and was.get("status") == "False":
        kopf.info(body, reason="SendersScheduled", message=now.message)


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
    watch_sender_scheduling(registry)


def watch_sender_scheduling(registry: kopf.OperatorRegistry) -> None:
    """Re-run a Tenant's reconcile when one of its sender pods turns out unschedulable, and when
    such a pod is placed or goes away: the scheduler decides after the Tenant's pass scaled the
    Deployment up, so only the pod tells.

    Only sender pods are listed and streamed (a server-side label selector). A pod placed at the
    first attempt changes nothing the Tenant reports and nudges nothing; the last state nudged
    per pod is remembered so that the pod's other updates cost no request.
    """
    last: dict[str, str] = {}

    @kopf.on.startup(registry=registry)
    def select_sender_pods(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.label_selectors["v1", "pods"] = (
            f"app.kubernetes.io/name={res.SENDER_NAME},{res.TENANT_LABEL}"
        )

    @kopf.on.event(
        "v1",
        "pods",
        registry=registry,
        labels={"app.kubernetes.io/name": res.SENDER_NAME, res.TENANT_LABEL: kopf.PRESENT},
    )
    async def sender_pod_changed(
        *, type: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        uid, tenant = str(body.metadata.uid), body.metadata.labels.get(res.TENANT_LABEL)
        state = res.scheduling_state(body, deleted=type == "DELETED")
        previous = last.pop(uid, "") if type == "DELETED" else last.get(uid, "")
        if state and type != "DELETED":
            last[uid] = state
        if not tenant or not res.scheduling_news(previous, state):
            return
        logger.info(
            "sender pod %s of Tenant %s: PodScheduled %s", body.metadata.name, tenant, state
        )
        nudge = {"metadata": {"annotations": {SCHEDULING_ANNOTATION: f"{uid}/{state}"}}}
        await memo.context.kube.merge_patch(res.TENANT_API_VERSION, "Tenant", tenant, nudge)
