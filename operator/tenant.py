"""The Tenant controller: namespace, quota, limits, network policy, RBAC, sender, database row.

Built on the framework (operator/controller.py: spec parsing, the per-object lock, backoff,
the status writer, events on condition transitions, metrics, the clock). One level-based pass
serves create, update, resume and the resync timer: observe and act (`_state_everything`
states the whole desired state, so a crash at any point followed by a restart converges; a
timer pass may instead trust the last full pass, `Resyncs`), then decide the status, pure
(`decide`). Anything deleted or edited behind our back (a quota, the sender Deployment) comes
back on the change its watch makes (operator/child_watch.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import kopf
import stripe
from kubernetes.dynamic.exceptions import ConflictError, ResourceNotFoundError
from redis.asyncio import Redis

from penguinmails.api.billing.plans import allowance_for
from penguinmails.api.v1alpha1 import TenantConditionType, TenantSpec, TenantStatus
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
from penguinmails.operator import metrics, notices, usage
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.child_watch import ChildKind, watch_children
from penguinmails.operator.clock import Clock
from penguinmails.operator.conditions import READY, Observed
from penguinmails.operator.context import Context
from penguinmails.operator.controller import Controller, Logger, Pass
from penguinmails.operator.errors import ReconcileError, backoff_seconds, describe
from penguinmails.operator.kube import Kube
from penguinmails.operator.resync_loop import ResyncLoop
from penguinmails.operator.secret_access import apply_secret
from penguinmails.operator.status import Event, announce

log = logging.getLogger(__name__)

PLURAL = "tenants"
SUSPENDED = TenantConditionType.SUSPENDED.value
SENDERS_SCHEDULED = TenantConditionType.SENDERS_SCHEDULED.value
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
CHILD_CHANGED_ANNOTATION = f"{res.GROUP}/child-changed"
"""Set on a Tenant when one of its children was deleted or edited by someone else
(operator/child_watch.py): the pass it triggers states them again."""
WATCHED_CHILDREN: tuple[ChildKind, ...] = (
    ChildKind("apps", "v1", "deployments", "Deployment"),
    ChildKind("", "v1", "resourcequotas", "ResourceQuota"),
    ChildKind("", "v1", "limitranges", "LimitRange"),
    ChildKind("", "v1", "serviceaccounts", "ServiceAccount"),
    ChildKind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ChildKind("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ChildKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ChildKind("", "v1", "namespaces", "Namespace"),
    # By its one name only: what RBAC grants the operator to list and watch of Secrets.
    ChildKind("", "v1", "secrets", "Secret", name=res.SENDER_NAME),
)
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
        raise ReconcileError(
            "SenderSecretMissing",
            f"PM_SENDER_SECRET names the Secret {ctx.settings.sender_secret}, which does not "
            f"exist: create it with the keys {', '.join(res.SENDER_SECRET_KEYS)}",
        )
    data = dict(source.get("data") or {})
    missing = [key for key in res.SENDER_SECRET_KEYS if key not in data]
    if missing:
        raise ReconcileError(
            "SenderSecretIncomplete",
            f"the Secret {ctx.settings.sender_secret} lacks {', '.join(missing)}: add them",
        )
    try:
        master = MasterKeys.parse(_decode(data["PM_SUPPRESSION_KEY"]))
    except ValueError as error:
        raise ReconcileError(
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
    name: str = ""
    spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The Tenant's spec as that pass read it (unchanged since: same generation). With the
    name and generation, what a resync needs instead of the body kopf would keep for a timer."""

    def body(self, uid: str, status: Mapping[str, Any]) -> kopf.Body:
        """The Tenant as a cheap resync sees it: as of this full pass, with `status`."""
        raw = {
            "apiVersion": res.TENANT_API_VERSION,
            "kind": "Tenant",
            "metadata": {"name": self.name, "uid": uid, "generation": self.generation},
            "spec": copy.deepcopy(dict(self.spec)),
            "status": dict(status),
        }
        return kopf.Body(raw)  # type: ignore[arg-type]


class Resyncs:
    """Which timer passes may be cheap.

    A full pass applies about a dozen children and reads the campaigns, pods and Secrets: ~200
    requests a second at 1,000 Tenants on a 60 s resync. But every way a child can change
    between passes already makes a change pass: a deleted or edited child nudges its Tenant
    (operator/child_watch.py), a Campaign starting or finishing nudges it (replicas), a
    sender pod's scheduling nudges it, a sender pod that cannot start for want of its Secret
    nudges it, and a spec change or an annotation (ROTATE_SENDER_ANNOTATION: how the sender's
    logins are rotated) is a change. So a timer pass trusts the last full pass of this process
    and makes no request at all, unless the generation moved or the last full pass is
    `full_every` seconds old (PM_FULL_RESYNC_SECONDS, 10 hours as controller-runtime's sync
    period): the net for what a watch can miss (a child deleted while a watch reconnects, a
    changed platform Secret). The sender Secret is watched by its one name (`register`).

    The timer passes come from one operator-wide loop (operator/resync_loop.py) over the
    Tenants known here, not from a kopf timer per Tenant: a cheap pass needs only what
    `Stated` keeps; a full one reads the Tenant first (`TenantController.resync`)."""

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

    def full_due(self, uid: str) -> bool:
        """Whether the last full pass of this Tenant is `full_every` seconds old (or none)."""
        stated = self.applied.get(uid)
        return stated is None or self._clock() - stated.at >= self._full_every

    def record(self, uid: str, stated: Stated) -> None:
        self.applied[uid] = dataclasses.replace(stated, at=self._clock())

    def stale(self, uid: str) -> None:
        """A full pass started: until one succeeds, what the last one stated is not to be
        trusted (a failed change must not be papered over by a cheap pass from the state
        before it); the next timer pass is full, after the backoff."""
        stated = self.applied.get(uid)
        if stated is not None:
            self.applied[uid] = dataclasses.replace(stated, at=-math.inf)

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


@dataclass(frozen=True)
class Decision:
    """What one pass concluded about a Tenant: its conditions, its status fields, and the
    events that are not a condition's transition (the framework announces those)."""

    observed: list[Observed]
    fields: dict[str, Any]
    events: list[Event]


def decide(
    spec: TenantSpec,
    namespace: str,
    stated: Stated,
    sent: int,
    before: Mapping[str, Any],
) -> Decision:
    """Pure: the status a Tenant gets from what its pass stated (or trusted) and counted.

    `before` is its status as the pass found it: a tier that changed is announced once."""
    observed = _senders_observed(spec.tier, namespace, stated.placement)
    if spec.suspended:
        why = spec.suspend_reason or "no reason given"
        observed.append(
            Observed(
                SUSPENDED,
                "True",
                "SuspendedBySpec",
                f"sending stopped and the sender scaled to 0: {why}",
            )
        )
    else:
        observed.append(Observed(SUSPENDED, "False", "Active", "the tenant may send"))
    events = []
    previous_tier = before.get("tier")
    if previous_tier and previous_tier != spec.tier.value:
        events.append(
            Event("Normal", "TierChanged", f"resized from {previous_tier} to {spec.tier.value}")
        )
    fields = {
        "namespace": namespace,
        "tier": spec.tier.value,
        "senderReplicas": stated.replicas,
        "emailsSentThisMonth": sent,
    }
    return Decision(observed, fields, events)


Run = Pass[TenantSpec, TenantStatus]
CountSends = Callable[[Context, str, TenantSpec, uuid.UUID, datetime, Logger], Awaitable[int]]
"""This month's sends of a Tenant, and what follows from them (`_usage`)."""


class TenantController(Controller[TenantSpec, TenantStatus]):
    """Observe and act (`_state_everything`, or trust the last full pass: `Resyncs`), decide
    (`decide`), on the framework (operator/controller.py)."""

    kind = "Tenant"
    plural = PLURAL
    spec_model = TenantSpec
    status_model = TenantStatus
    neutral = frozenset({SUSPENDED})  # suspended or not is the customer's state, not health
    kopf_timer = False  # resynced by `self.loop`: kopf keeps no body nor task per Tenant

    def __init__(
        self,
        *,
        interval: float,
        full_every: float,
        clock: Clock | None = None,
        full_passes_at_once: int = FULL_PASSES_AT_ONCE,
        count_sends: CountSends | None = None,
    ) -> None:
        super().__init__(interval=interval, clock=clock)
        self.resyncs = Resyncs(full_every, self.clock.monotonic)
        self.full_passes = asyncio.Semaphore(full_passes_at_once)
        # Injected by the unit tests (no database there); the database's count otherwise.
        self.count_sends: CountSends = count_sends or _usage
        self.loop = ResyncLoop(
            kind=self.kind,
            interval=interval,
            known=self.resyncs.applied.keys,
            resync=self.resync,
            locks=self.locks,
            clock=self.clock,
        )

    async def run(
        self, ctx: Context, body: kopf.Body, *, retry: int, logger: Logger, timer: bool
    ) -> None:
        if not timer:
            self.loop.seen_from_kopf()
        await super().run(ctx, body, retry=retry, logger=logger, timer=timer)

    async def resync(self, ctx: Context, uid: str) -> None:
        """The timer pass of one Tenant this process reconciled (the loop holds its lock).

        Cheap: from what the last full pass kept (`Stated`) and the status this process last
        saw. When the full-pass net is due, the Tenant is read by name first (its spec and
        annotations may have moved in ways a missed watch event hid); one deleted meanwhile,
        or replaced by another of the same name, is forgotten."""
        stated = self.resyncs.applied.get(uid)
        if stated is None or self.backoff.waiting(uid):
            return  # unknown, or a failed pass's backoff is not over: no read either
        if self.resyncs.full_due(uid):
            raw = await ctx.kube.get(self.api_version, self.kind, stated.name)
            if raw is None or (raw.get("metadata") or {}).get("uid") != uid:
                log.info("Tenant %s is gone: no more resyncs of it", stated.name)
                self.forget(uid)
                return
            body = kopf.Body(raw)  # type: ignore[arg-type]
        else:
            body = stated.body(uid, self.written.get(uid) or {})
        await self.run(ctx, body, retry=0, logger=log, timer=True)

    def forget(self, uid: str) -> None:
        self.resyncs.forget(uid)
        self.written.pop(uid, None)
        self.backoff.succeeded(uid)

    def attach(self, registry: kopf.OperatorRegistry) -> None:
        super().attach(registry)
        self.loop.attach(registry)

    def skip(self, body: kopf.Body) -> bool:
        # Being deleted: only the cleanup acts now (a pass would re-apply the namespace).
        return not body.metadata.name or bool(body.metadata.get("deletionTimestamp"))

    def depth(self, body: kopf.Body, timer: bool) -> str:
        if not timer:
            return "change"
        depth = "cheap" if self.resyncs.cheap(body, timer=True) is not None else "full"
        metrics.RESYNC_PASSES.labels(kind=self.kind, depth=depth).inc()
        return depth

    async def reconcile(self, run: Run) -> None:
        tenant = res.TenantRef(name=run.name, uid=run.uid, tier=run.spec.tier)
        stated = self.resyncs.applied.get(run.uid) if run.depth == "cheap" else None
        if stated is None:
            self.resyncs.stale(run.uid)
            rotate_token = run.body.metadata.annotations.get(ROTATE_SENDER_ANNOTATION)
            async with self.full_passes:
                stated = await _state_everything(
                    run.ctx, tenant, run.spec, run.generation, rotate_token
                )
            spec = copy.deepcopy(dict(run.body.spec))
            self.resyncs.record(run.uid, dataclasses.replace(stated, name=run.name, spec=spec))
            # The loop's cheap passes start from the status as this pass found it (a write
            # below replaces it), not from a body kopf no longer keeps.
            self.written.setdefault(run.uid, run.status.current)
        sent = await self.count_sends(
            run.ctx, run.name, run.spec, stated.tenant_id, run.now, run.logger
        )
        decision = decide(run.spec, tenant.namespace, stated, sent, run.status.before)
        await run.status.write(decision.observed, **decision.fields)
        announce(run.body, decision.events)

    async def cleanup(self, ctx: Context, body: kopf.Body, retry: int, logger: Logger) -> None:
        # Forgotten first: no resync of a Tenant being deleted, even while its cleanup retries.
        self.forget(str(body.metadata.uid))
        await cleanup(ctx, body, retry, logger)


async def _usage(
    ctx: Context,
    name: str,
    spec: TenantSpec,
    tenant_id: uuid.UUID,
    now: datetime,
    logger: Logger,
) -> int:
    """This month's sent messages; past a plan that allows overage, the excess goes to Stripe;
    the notices at 80/95/100% of the allowance (operator/notices.py).

    A failed report is retried on the next pass: it must not hold up the rest of the Tenant.
    """
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
            Observed(READY, "False", "SendersUnschedulable", message),
            Observed(SENDERS_SCHEDULED, "False", "Unschedulable", message),
        ]
    if placement.pods:
        scheduled = Observed(
            SENDERS_SCHEDULED,
            "True",
            "Scheduled",
            f"no sender pod is waiting for a node ({placement.pods} running or starting)",
        )
    else:
        scheduled = Observed(
            SENDERS_SCHEDULED, "True", "NoSenders", "no sender pod runs: no campaign is sending"
        )
    return [Observed(READY, "True", "Reconciled", f"namespace {namespace} is ready"), scheduled]


async def cleanup(ctx: Context, body: kopf.Body, retry: int, logger: Logger) -> None:
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


async def _delete_redis_user(ctx: Context, name: str, logger: Logger) -> None:
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
    """Attach the Tenant controller, the watch of its children and of its sender pods; the
    resync interval comes from the settings."""
    TenantController(
        interval=settings.resync_seconds, full_every=settings.full_resync_seconds
    ).attach(registry)
    # A deleted or edited child is back within seconds: the resync does not re-apply them
    # (`Resyncs`). Metadata-only watches of our own, not kopf's (which would keep state for
    # every child): operator/child_watch.py.
    watch_children(
        registry,
        owner=(res.TENANT_API_VERSION, "Tenant"),
        label=res.TENANT_LABEL,
        nudge_annotation=CHILD_CHANGED_ANNOTATION,
        children=WATCHED_CHILDREN,
    )
    watch_sender_scheduling(registry)


def watch_sender_scheduling(registry: kopf.OperatorRegistry) -> None:
    """Re-run a Tenant's reconcile when one of its sender pods turns out unschedulable, and when
    such a pod is placed or goes away: the scheduler decides after the Tenant's pass scaled the
    Deployment up, so only the pod tells.

    Also when a sender pod cannot start for want of its Secret (CreateContainerConfigError):
    the Secret's own watch (`register`) repairs a deletion at once, but not one it missed while
    reconnecting, and the resync reads nothing; then the pod that needs it tells.

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
