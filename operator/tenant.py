"""The Tenant controller: namespace, quota, limits, network policy, RBAC, sender, database row.

One level-based `reconcile` serves create, update, resume and the resync timer: it states the
whole desired state every time, so a crash at any point followed by a restart converges, and
anything deleted behind our back (a quota, the sender Deployment) comes back on the next tick.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
FULL_PASSES_AT_ONCE = 16
"""Full passes in flight at once. Thousands of Tenants arrive at once (a restart resumes every
one, a bulk import creates them): unbounded, each holds its manifests and responses while its
requests queue for the client's KUBE_WORKERS threads anyway, and the operator's peak memory
(which Python keeps once reached) grows with the burst. Sixteen keep the threads busy (each pass
applies ten children concurrently) while the others wait holding only kopf's own state."""
SCHEDULING_ANNOTATION = f"{res.GROUP}/sender-scheduling"
"""Set on a Tenant when one of its sender pods becomes (un)schedulable, so that its status says
so at once rather than at the next resync (`watch_sender_scheduling`)."""
SENDER_CONFIG_ANNOTATION = f"{res.GROUP}/sender-config"
"""Set on a Tenant when one of its sender pods cannot start for want of its Secret
(CreateContainerConfigError): the pass it triggers issues the Secret again."""
ROTATE_SENDER_ANNOTATION = f"{res.GROUP}/rotate-sender-credentials"
"""Set (or change) this annotation on a Tenant to any value to issue its sender new database and
Redis passwords now; the value is recorded on the sender Secret, so each value rotates once."""


async def _count_active_campaigns(kube: Kube, namespace: str) -> int:
    try:
        campaigns = await kube.list(res.TENANT_API_VERSION, "Campaign", namespace)
    except ResourceNotFoundError:
        return 0
    return sum(1 for campaign in campaigns if res.is_active_campaign(campaign))


async def _issue_sender_secret(
    ctx: Context, tenant: res.TenantRef, tenant_id: uuid.UUID, rotate_token: str | None
) -> None:
    """Give the tenant's sender its own database and Redis logins and token key, in its own
    namespace.

    The platform Secret (PM_SENDER_SECRET) says where senders connect, and its logins are the
    platform's (the Redis one must be allowed ACL SETUSER); the logins in the tenant's copy are
    the tenant's own (`tenant_logins`, `tenant_redis`), never the platform's. Their passwords
    live only in that copy: kept while the copy holds them for the current login, issued anew
    when the copy is gone or when the Tenant's `rotate_token` (ROTATE_SENDER_ANNOTATION) is not
    the one the copy records (the rotation, see docs/operations.md).
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
    copy = (await ctx.kube.get("v1", "Secret", res.SENDER_NAME, tenant.namespace)) or {}
    recorded = ((copy.get("metadata") or {}).get("annotations") or {}).get(res.ROTATED_ANNOTATION)
    # A rotation asked for and not done yet: the copy's passwords are not kept.
    rotating = rotate_token is not None and rotate_token != recorded
    current = {} if rotating else copy.get("data") or {}
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
    await apply_secret(ctx.kube, res.sender_secret(tenant, data, rotated_for=rotate_token))


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


@dataclass(frozen=True)
class Stated:
    """What a full pass of one Tenant stated and observed, reused by cheap resyncs."""

    generation: int
    tenant_id: uuid.UUID
    replicas: int
    placement: res.SenderPlacement
    at: float = 0.0
    """When it was stated, on the `Resyncs` clock."""


class Resyncs:
    """Which timer passes may be cheap.

    A full pass applies about a dozen children and reads the campaigns, pods and Secrets: ~200
    requests a second at 1,000 Tenants on a 60 s resync. But every way a child can change
    between passes already makes a change pass: a deleted or edited child nudges its Tenant
    (`handlers.repair_children`), a Campaign starting or finishing nudges it (replicas), a
    sender pod's scheduling nudges it, a sender pod that cannot start for want of its Secret
    nudges it, and a spec change or an annotation (ROTATE_SENDER_ANNOTATION: how the sender's
    logins are rotated) is a change. So a timer pass trusts the last full pass of this process
    and makes no request at all, unless the generation moved or the last full pass is
    `full_every` seconds old (PM_FULL_RESYNC_SECONDS, 10 hours as controller-runtime's sync
    period): the net for what a watch can miss (a child deleted while a watch reconnects, a
    changed platform Secret, a sender Secret edited by hand: Secrets are not watched, since the
    operator may not list them)."""

    def __init__(self, full_every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.applied: dict[str, Stated] = {}
        self._full_every = full_every
        self._clock = clock

    def cheap(self, body: kopf.Body, *, timer: bool) -> Stated | None:
        """The state a timer pass may trust, or None for a full pass."""
        stated = self.applied.get(str(body.metadata.uid))
        if not timer or stated is None:
            return None
        if stated.generation != int(body.metadata.get("generation") or 0):
            return None
        if self._clock() - stated.at >= self._full_every:
            return None
        return stated

    def record(self, uid: str, stated: Stated) -> None:
        self.applied[uid] = dataclasses.replace(stated, at=self._clock())

    def forget(self, uid: str) -> None:
        self.applied.pop(uid, None)


async def _state_everything(
    ctx: Context, tenant: res.TenantRef, spec: TenantSpec, generation: int, rotate_token: str | None
) -> Stated:
    """The full pass: namespace, children, database row, sender Secret, pods observed."""
    limits = TIERS[spec.tier]
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
        name=tenant.name,
        tier=spec.tier.value,
        namespace=tenant.namespace,
        display_name=spec.display_name,
        contact_email=spec.contact_email,
        suspended=spec.suspended,
    )
    if ctx.settings.sender_secret:
        await _issue_sender_secret(ctx, tenant, tenant_id, rotate_token)
    # Scaled to 0, whatever sender pods remain are on their way out: nothing to ask.
    pods = await ctx.kube.list("v1", "Pod", tenant.namespace) if replicas else []
    return Stated(
        generation=generation,
        tenant_id=tenant_id,
        replicas=replicas,
        placement=res.sender_placement(pods),
    )


async def reconcile(
    ctx: Context,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger | kopf.Logger,
    *,
    resyncs: Resyncs | None = None,
    cached: Stated | None = None,
    full_passes: asyncio.Semaphore | None = None,
) -> None:
    """One pass over a Tenant. `cached` (a cheap resync, see `Resyncs`): what the last full
    pass stated, trusted; `resyncs` records each full pass; `full_passes` bounds how many run
    at once (FULL_PASSES_AT_ONCE)."""
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
    try:
        stated = cached
        if stated is None:
            rotate_token = body.metadata.annotations.get(ROTATE_SENDER_ANNOTATION)
            async with full_passes or contextlib.nullcontext():
                stated = await _state_everything(ctx, tenant, spec, generation, rotate_token)
            if resyncs is not None:
                resyncs.record(tenant.uid, stated)
        sent = await _usage(ctx, name, spec, stated.tenant_id, logger)
    except Exception as error:
        failure = describe(error)
        logger.warning("Tenant %s not reconciled: %s", name, failure.message)
        conditions.write_status(
            patch, status, generation, [Observed("Ready", "False", failure.reason, failure.message)]
        )
        kopf.warn(body, reason=failure.reason, message=failure.message)
        metrics.RECONCILE_ERRORS.labels(kind="Tenant", reason=failure.reason).inc()
        raise kopf.TemporaryError(failure.message, delay=backoff_seconds(retry)) from error
    replicas, placement = stated.replicas, stated.placement

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
    resyncs = Resyncs(settings.full_resync_seconds)
    full_passes = asyncio.Semaphore(FULL_PASSES_AT_ONCE)

    async def run(
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        memo: kopf.Memo,
        logger: kopf.Logger,
        timer: bool,
    ) -> None:
        cached = resyncs.cheap(body, timer=timer)
        depth = "cheap" if cached is not None else "full"
        if timer:
            metrics.RESYNC_PASSES.labels(kind="Tenant", depth=depth).inc()
        with metrics.observe("Tenant", depth if timer else "change"):
            await reconcile(
                memo.context,
                body,
                patch,
                retry,
                logger,
                resyncs=resyncs,
                cached=cached,
                full_passes=full_passes,
            )

    async def delete(*, body: kopf.Body, retry: int, memo: kopf.Memo, logger: kopf.Logger) -> None:
        await cleanup(memo.context, body, retry, logger)
        resyncs.forget(str(body.metadata.uid))

    register_controller(
        registry, plural=PLURAL, interval=settings.resync_seconds, reconcile=run, cleanup=delete
    )
    watch_sender_scheduling(registry)


def watch_sender_scheduling(registry: kopf.OperatorRegistry) -> None:
    """Re-run a Tenant's reconcile when one of its sender pods turns out unschedulable, and when
    such a pod is placed or goes away: the scheduler decides after the Tenant's pass scaled the
    Deployment up, so only the pod tells.

    Also when a sender pod cannot start for want of its Secret (CreateContainerConfigError):
    Secrets are not watched (the operator may not list them) and the resync reads nothing, so
    a deleted sender Secret is issued again when a pod needs it (a running pod keeps the
    environment it started with).

    Only sender pods are listed and streamed (a server-side label selector). A pod placed at the
    first attempt changes nothing the Tenant reports and nudges nothing; the last state nudged
    per pod is remembered so that the pod's other updates cost no request.
    """
    last: dict[str, str] = {}
    stuck: set[str] = set()

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
        if type == "DELETED" or not res.config_error(body):
            stuck.discard(uid)
        elif uid not in stuck:
            stuck.add(uid)  # once per pod: a pass that cannot fix it must not loop
            if tenant:
                logger.info(
                    "sender pod %s of Tenant %s: %s", body.metadata.name, tenant, res.CONFIG_ERROR
                )
                value = f"{uid}/{body.metadata.get('resourceVersion', '')}"  # each stall a change
                nudge = {"metadata": {"annotations": {SENDER_CONFIG_ANNOTATION: value}}}
                await memo.context.kube.merge_patch(res.TENANT_API_VERSION, "Tenant", tenant, nudge)
        if not tenant or not res.scheduling_news(previous, state):
            return
        logger.info(
            "sender pod %s of Tenant %s: PodScheduled %s", body.metadata.name, tenant, state
        )
        nudge = {"metadata": {"annotations": {SCHEDULING_ANNOTATION: f"{uid}/{state}"}}}
        await memo.context.kube.merge_patch(res.TENANT_API_VERSION, "Tenant", tenant, nudge)
