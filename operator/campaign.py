"""The Campaign controller: preflight gate, enqueue, schedule, pause/stop, status counts.

One level-based `reconcile` serves create, update, resume and the resync timer (which is also
what bounds how often status counts are written: once per tick, and only when they changed).

The operator never sends mail: it decides *whether* the tenant's senders may send a campaign and
tells them through the `campaigns` row (`sending`, the gate) and the plan stored there (content,
domain, DKIM Secret name, relays, throttles). The senders claim deliveries only of campaigns
whose gate is open, so no mail leaves before preflight passes, after a pause, or outside the
sending window. Scaling the tenant's sender Deployment stays with the Tenant controller
(`tenant_resources.desired_replicas` over `is_active_campaign`); this controller only nudges
the Tenant (an annotation with the active-campaign count) when a campaign starts or stops
sending, so the Deployment follows within one reconcile instead of one resync period.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import kopf
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from penguinmails.api.billing.plans import Allowance, allowance_for
from penguinmails.api.v1alpha1 import CampaignSpec, TenantSpec
from penguinmails.api.v1alpha1.campaign import CampaignStatus, SendWindow
from penguinmails.api.v1alpha1.common import parse_duration
from penguinmails.api.v1alpha1.tiers import TIERS
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.ledger import (
    CAMPAIGN_FAULT,
    CampaignPlan,
    PlanMailbox,
    Relay,
    StopRules,
    campaign_counts,
    clear_pause_reason,
    enqueue,
    get_pause_reason,
    mailbox_counts,
    mailbox_first_sent,
    set_sending,
    upsert_campaign,
    window_counts,
)
from penguinmails.common.db.tenants import get_tenant
from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy
from penguinmails.common.settings import OperatorSettings
from penguinmails.common.throttle import warmup_daily_limit
from penguinmails.common.webhook_events import campaign_state_changed
from penguinmails.operator import conditions, metrics, rotation
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.clock import Clock
from penguinmails.operator.conditions import Observed
from penguinmails.operator.context import Context
from penguinmails.operator.controller import Controller, Logger, Pass
from penguinmails.operator.errors import ReconcileError, backoff_seconds, describe
from penguinmails.operator.inuse import mark_in_use
from penguinmails.operator.relay_access import ensure_relay_secrets, plan_relay
from penguinmails.operator.rotation import RotationDomain

PLURAL = "campaigns"
ACTIVE_ANNOTATION = f"{res.GROUP}/active-campaigns"
SHARED_POOL_LABEL = f"{res.GROUP}/pool"
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class CampaignSettings:
    unsubscribe_url: str
    """Platform unsubscribe endpoint (PM_UNSUBSCRIBE_URL), used when a campaign sets none."""
    platform_namespace: str
    """Namespace of the shared server pool (PM_PLATFORM_NAMESPACE)."""

    @classmethod
    def from_env(cls) -> CampaignSettings:
        return cls(
            unsubscribe_url=os.environ.get(
                "PM_UNSUBSCRIBE_URL", "https://unsubscribe.penguinmails.io/u"
            ),
            platform_namespace=os.environ.get("PM_PLATFORM_NAMESPACE", "penguinmails"),
        )


@dataclass(frozen=True)
class Failure:
    """A preflight rule that does not hold: `reason` names the rule, `message` the fix."""

    reason: str
    message: str


def _condition_true(obj: Mapping[str, Any] | None, type_: str) -> bool:
    found = conditions.find(((obj or {}).get("status") or {}).get("conditions"), type_)
    return bool(found and found.get("status") == "True")


async def unsubscribe_destination(spec: CampaignSpec) -> list[Failure]:
    """Recipients (and the mail providers that pre-fetch links) are sent to the tenant's
    unsubscribe URL: never to the cluster's own services or a private network."""
    if not spec.unsubscribe.url:
        return []
    host = urlsplit(spec.unsubscribe.url).hostname or ""
    try:
        await EgressPolicy.from_env().check("spec.unsubscribe.url", host)
    except DestinationNotAllowedError as error:
        return [Failure("DestinationNotAllowed", error.message)]
    return []


def preflight(
    spec: CampaignSpec,
    *,
    tenant: Mapping[str, Any] | None,
    domain: Mapping[str, Any] | None,
    servers: Sequence[Mapping[str, Any]],
    server_names: Sequence[str],
    sent_this_month: int = 0,
    allowance: Allowance | None = None,
) -> list[Failure]:
    """Every rule that stops the campaign from sending, in the order a user should fix them.

    `allowance` is the tenant's plan (api/billing/plans.py); without one, the tier's
    emails_per_month with no overage.
    """
    failures: list[Failure] = []
    if tenant is None:
        return [Failure("TenantNotFound", "no Tenant owns this namespace; create the Tenant first")]
    tenant_spec = TenantSpec.model_validate(dict(tenant.get("spec") or {}))
    if tenant_spec.suspended:
        why = tenant_spec.suspend_reason or "no reason given"
        failures.append(
            Failure("TenantSuspended", f"the tenant is suspended ({why}); unset spec.suspended")
        )
    allowance = allowance or Allowance(TIERS[tenant_spec.tier].emails_per_month, False)
    limit = allowance.emails_per_month
    if sent_this_month >= limit and not allowance.overage_allowed:
        failures.append(
            Failure(
                "TierLimitReached",
                f"the tenant sent {sent_this_month} of the {limit} messages its "
                f"{tenant_spec.tier.value} plan allows this month; new sends resume on the 1st "
                "(UTC), or upgrade the plan now (billing portal or change plan)",
            )
        )
    if tenant_spec.postal_address is None:
        failures.append(
            Failure(
                "PostalAddressMissing",
                "CAN-SPAM requires a postal address in every message; set "
                "spec.postalAddress on the Tenant",
            )
        )
    domain_name = spec.sending_domain_ref.name
    failures += domain_failures(domain_name, domain, "spec.sendingDomainRef")
    if domain is not None:
        fqdn = str((domain.get("spec") or {}).get("domain", "")).lower()
        from_domain = spec.from_.address.rpartition("@")[2].lower()
        if fqdn and from_domain != fqdn:
            failures.append(
                Failure(
                    "FromDomainMismatch",
                    f"spec.from.address is at {from_domain} but the sending domain is {fqdn}; "
                    "send from an address of the sending domain (DMARC alignment)",
                )
            )
    failures += server_failures(server_names, servers)
    failures += check_content(spec)
    return failures


def domain_failures(name: str, domain: Mapping[str, Any] | None, field: str) -> list[Failure]:
    """A SendingDomain the campaign sends from must exist, be verified and Ready."""
    if domain is None:
        return [
            Failure(
                "SendingDomainNotFound",
                f"SendingDomain {name} does not exist; create it or fix {field}",
            )
        ]
    if not _condition_true(domain, "DNSVerified"):
        return [
            Failure(
                "DomainNotVerified",
                f"SendingDomain {name} is not DNSVerified; publish its records "
                "(see its status.records) and wait for verification",
            )
        ]
    if not _condition_true(domain, "Ready"):
        return [Failure("DomainNotReady", f"SendingDomain {name} is not Ready; see its conditions")]
    return []


def server_failures(
    server_names: Sequence[str], servers: Sequence[Mapping[str, Any]]
) -> list[Failure]:
    """There must be servers to send through, each existing and Ready."""
    failures = []
    if not server_names:
        failures.append(
            Failure(
                "NoSmtpServers",
                "no SmtpServer to send through; set spec.smtpServerRefs or the domain's "
                "smtpServerRefs",
            )
        )
    found = {str((s.get("metadata") or {}).get("name")): s for s in servers}
    for name in server_names:
        server = found.get(name)
        if server is None:
            failures.append(
                Failure("SmtpServerNotFound", f"SmtpServer {name} does not exist; create it")
            )
        elif not _condition_true(server, "Ready"):
            failures.append(
                Failure("SmtpServerNotReady", f"SmtpServer {name} is not Ready; see its conditions")
            )
    return failures


def rotation_failures(spec: CampaignSpec, domains: Sequence[RotationDomain]) -> list[Failure]:
    """Preflight of spec.rotation: each of its SendingDomains and their servers as for the
    campaign's own domain, and the mailboxes it names."""
    failures: list[Failure] = []
    for domain in domains:
        failures += domain_failures(
            domain.ref, domain.obj, "spec.rotation.mailboxes[].sendingDomainRef"
        )
        failures += server_failures(domain.server_names, domain.servers)
    failures += [Failure(r, m) for r, m in rotation.mailbox_failures(spec, domains)]
    return failures


def check_content(spec: CampaignSpec) -> list[Failure]:
    """Templates must compile in the sandbox. The unsubscribe link and postal address are
    guaranteed by the footer every message gets; a template may place them itself too."""
    env = SandboxedEnvironment()
    for field, template in (("subject", spec.subject), ("text", spec.text), ("html", spec.html)):
        if template is None:
            continue
        try:
            env.parse(template)
        except TemplateSyntaxError as error:
            return [
                Failure(
                    "TemplateInvalid",
                    f"spec.{field} line {error.lineno}: {error.message}; fix the template",
                )
            ]
    return []


def in_window(window: SendWindow | None, now: datetime) -> bool:
    """Whether `now` falls in the window, judged on the wall clock of its time zone (so a
    daylight-saving change moves the window with local time, as recipients see it)."""
    if window is None:
        return True
    local = now.astimezone(ZoneInfo(window.timezone))
    return (
        _WEEKDAYS[local.weekday()] in {day.value for day in window.days}
        and window.start_hour <= local.hour < window.end_hour
    )


def phase_for(
    *,
    failures: Sequence[Failure],
    paused: bool,
    pause_reason: str | None,
    stopped: str | None,
    scheduled: bool,
    counts: Mapping[str, int],
) -> str:
    if failures:
        return "Pending"
    if paused or pause_reason:
        return "Paused"
    if stopped:
        return "Stopped"
    if counts.get("total", 0) > 0 and counts["queued"] == 0 and counts["deferred"] == 0:
        return "Completed"
    if scheduled:
        return "Scheduled"
    return "Sending"


def plan_stop_rules(spec: CampaignSpec) -> StopRules:
    """spec.stopRules as the plan carries them to the senders and the intake."""
    rules = spec.stop_rules
    return StopRules(
        max_bounce_rate=rules.max_bounce_rate,
        max_complaint_rate=rules.max_complaint_rate,
        window=rules.window,
        window_seconds=max(1, int(parse_duration(rules.window).total_seconds())),
        min_sample=rules.min_sample,
    )


def stop_rule(spec: CampaignSpec, window: Mapping[str, int]) -> str | None:
    """The stop rule that fires, as a message; None when none does. `window` holds the counts
    over spec.stopRules.window (`ledger.window_counts`): done, bounced, complained."""
    return plan_stop_rules(spec).breached(window)


def build_plan(
    spec: CampaignSpec,
    *,
    domain: Mapping[str, Any],
    servers: Sequence[Mapping[str, Any]],
    postal_address: str,
    settings: CampaignSettings,
    started_at: datetime | None,
    now: datetime,
    mailboxes: Sequence[PlanMailbox] = (),
) -> CampaignPlan:
    fqdn = str(domain["spec"]["domain"]).lower()
    tenant_namespace = str((domain.get("metadata") or {}).get("namespace") or "")
    relays = [_relay(server, tenant_namespace) for server in servers]
    daily = None
    if spec.warmup is not None and spec.warmup.enabled:
        day = (now - started_at).days if started_at else 0
        daily = warmup_daily_limit(
            spec.warmup.initial_per_day,
            spec.warmup.daily_increase_percent,
            day,
            spec.warmup.target_per_day,
        )
    return CampaignPlan(
        from_address=spec.from_.address,
        from_name=spec.from_.name,
        reply_to=spec.reply_to.address if spec.reply_to else None,
        subject=spec.subject,
        text=spec.text,
        html=spec.html,
        domain=fqdn,
        dkim_secret=f"{domain['metadata']['name']}-dkim",
        unsubscribe_url=spec.unsubscribe.url or settings.unsubscribe_url,
        unsubscribe_mailto=spec.unsubscribe.mailto or f"unsubscribe@{fqdn}",
        postal_address=postal_address,
        relays=relays,
        per_hour=spec.throttle.per_hour,
        per_day=spec.throttle.per_day,
        per_mailbox_per_day=spec.throttle.per_mailbox_per_day,
        campaign_daily_limit=daily,
        sending_seconds=(
            (spec.schedule.window.end_hour - spec.schedule.window.start_hour) * 3600
            if spec.schedule.window is not None
            else 86400
        ),
        stop_rules=plan_stop_rules(spec),
        mailboxes=list(mailboxes),
        sticky=spec.rotation.sticky if spec.rotation is not None else True,
    )


def plan_secrets(plan: CampaignPlan) -> list[str]:
    """The Secrets a sender reads for `plan`: the DKIM keys of each mailbox's domain and its
    relays' credentials and CAs (each once)."""
    names = [plan.dkim_secret]
    for mailbox in plan.senders():
        names.append(mailbox.dkim_secret)
        for relay in [*plan.relays, *mailbox.relays]:
            names += [n for n in (relay.credentials_secret, relay.ca_secret) if n]
    return list(dict.fromkeys(names))


def _relay(server: Mapping[str, Any], tenant_namespace: str) -> Relay:
    warmup = (server.get("status") or {}).get("warmup") or {}
    daily = warmup.get("dailyLimit") if not warmup.get("complete") else None
    return plan_relay(server, tenant_namespace, daily_limit=daily)


async def _servers(
    ctx: Context,
    settings: CampaignSettings,
    namespace: str,
    names: Sequence[str],
    tier_shared: bool,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Names to use and the objects found. Shared tiers send through the shared pool."""
    if tier_shared:
        pool = await ctx.kube.list(
            res.TENANT_API_VERSION, "SmtpServer", settings.platform_namespace
        )
        chosen = [
            s
            for s in pool
            if ((s.get("metadata") or {}).get("labels") or {}).get(SHARED_POOL_LABEL) == "shared"
        ]
        return [str(s["metadata"]["name"]) for s in chosen], chosen
    found = []
    for name in names:
        server = await ctx.kube.get(res.TENANT_API_VERSION, "SmtpServer", name, namespace)
        if server is not None:
            found.append(server)
    return list(names), found


async def _rotation_domains(
    ctx: Context,
    settings: CampaignSettings,
    spec: CampaignSpec,
    namespace: str,
    domain: Mapping[str, Any] | None,
    tier_shared: bool,
) -> list[RotationDomain]:
    """The SendingDomains spec.rotation names, each with the servers its mailboxes use: the
    campaign's own smtpServerRefs when set, else the domain's (or the shared pool)."""
    if spec.rotation is None:
        return []
    found = []
    for ref in rotation.refs(spec):
        obj = (
            domain
            if ref == spec.sending_domain_ref.name
            else await ctx.kube.get(res.TENANT_API_VERSION, "SendingDomain", ref, namespace)
        )
        names = [r.name for r in spec.smtp_server_refs] or [
            r["name"] for r in ((obj or {}).get("spec") or {}).get("smtpServerRefs", [])
        ]
        server_names, servers = await _servers(ctx, settings, namespace, names, tier_shared)
        relays = [_relay(server, namespace) for server in servers]
        found.append(RotationDomain(ref, obj, server_names, servers, relays))
    return found


class CampaignController(Controller[CampaignSpec, CampaignStatus]):
    kind = "Campaign"
    plural = PLURAL
    spec_model = CampaignSpec
    status_model = CampaignStatus
    neutral = frozenset({"Sending"})  # not sending (paused, scheduled, done) is not a fault

    def __init__(
        self, settings: CampaignSettings, interval: float, *, clock: Clock | None = None
    ) -> None:
        super().__init__(interval=interval, clock=clock)
        self.settings = settings
        self.finished = FinishedResyncs(interval, self.clock.monotonic)

    def skip(self, body: kopf.Body) -> bool:
        return not body.metadata.name or not body.metadata.namespace

    def due(self, body: kopf.Body, now: datetime) -> bool:
        if self.finished.skip(body, timer=True):
            metrics.RESYNC_PASSES.labels(kind="Campaign", depth="skipped").inc()
            return False
        metrics.RESYNC_PASSES.labels(kind="Campaign", depth="full").inc()
        return True

    def invalid(self, message: str) -> tuple[list[Observed], dict[str, Any]]:
        return [
            Observed("Ready", "False", "InvalidSpec", message),
            Observed("Preflight", "False", "InvalidSpec", message),
        ], {"phase": "Pending"}

    def failure(
        self, run: Run, error: ReconcileError, permanent: bool
    ) -> tuple[list[Observed], dict[str, Any]]:
        if error.reason == "InvalidSpec":
            return self.invalid(error.message)
        return super().failure(run, error, permanent)

    async def reconcile(self, run: Run) -> None:
        await reconcile(run, self.settings)

    async def cleanup(self, ctx: Context, body: kopf.Body, retry: int, logger: Logger) -> None:
        await cleanup(ctx, body, retry)
        self.finished.forget(str(body.metadata.uid))


Run = Pass[CampaignSpec, CampaignStatus]


async def reconcile(run: Run, settings: CampaignSettings) -> None:
    """Observe (tenant, domain, servers, the ledger), decide (`preflight`, `phase_for`,
    `_conditions`: pure), act (plan, enqueue, open or close the gate, mark what is in use)."""
    ctx, body, spec, now = run.ctx, run.body, run.spec, run.now
    name, namespace, generation = run.name, run.namespace, run.generation
    status: Mapping[str, Any] = run.status.current
    if spec.schedule.window is not None:
        try:
            ZoneInfo(spec.schedule.window.timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ReconcileError(
                "InvalidSpec",
                f"spec.schedule.window.timezone: unknown time zone {error}; "
                "fix the Campaign's spec",
                transient=False,
            ) from None
    uid = uuid.UUID(run.uid)
    tenant_name = namespace.removeprefix(res.NAMESPACE_PREFIX)
    tenant = (
        await ctx.kube.get(res.TENANT_API_VERSION, "Tenant", tenant_name)
        if namespace.startswith(res.NAMESPACE_PREFIX)
        else None
    )
    tenant_row = await get_tenant(ctx.db, tenant_name) if tenant is not None else None
    domain = await ctx.kube.get(
        res.TENANT_API_VERSION, "SendingDomain", spec.sending_domain_ref.name, namespace
    )
    names = [ref.name for ref in spec.smtp_server_refs] or [
        ref["name"] for ref in ((domain or {}).get("spec") or {}).get("smtpServerRefs", [])
    ]
    tier_shared = False
    allowance = None
    if tenant is not None:
        tenant_spec = TenantSpec.model_validate(dict(tenant.get("spec") or {}))
        tier_shared = TIERS[tenant_spec.tier].dedicated_servers == 0 and not names
        allowance = await allowance_for(ctx.db, tenant_spec.tier)
    server_names, servers = await _servers(ctx, settings, namespace, names, tier_shared)
    rotation_domains = await _rotation_domains(ctx, settings, spec, namespace, domain, tier_shared)
    sent_this_month = int(((tenant or {}).get("status") or {}).get("emailsSentThisMonth") or 0)
    failures = preflight(
        spec,
        tenant=tenant if tenant_row is not None else None,
        domain=domain,
        servers=servers,
        server_names=server_names,
        sent_this_month=sent_this_month,
        allowance=allowance,
    )
    if spec.rotation is not None:
        failures += [f for f in rotation_failures(spec, rotation_domains) if f not in failures]
    failures += await unsubscribe_destination(spec)
    mailbox_days: list[rotation.MailboxToday] = []
    per_mailbox: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    window: dict[str, int] = {}
    pause_reason = None
    stopped = None
    scheduled = False
    if tenant_row is not None:
        async with tenant_connection(ctx.db, tenant_row.id) as conn:
            if not failures:
                assert domain is not None and tenant is not None
                postal = TenantSpec.model_validate(dict(tenant["spec"])).postal_address
                assert postal is not None
                await ensure_relay_secrets(ctx, servers, namespace)
                planned: list[PlanMailbox] = []
                if spec.rotation is not None:
                    for rotated in rotation_domains:
                        await ensure_relay_secrets(ctx, rotated.servers, namespace)
                    first_sent = await mailbox_first_sent(
                        conn, rotation.addresses(spec, rotation_domains)
                    )
                    planned, mailbox_days = rotation.plan_mailboxes(
                        spec, rotation_domains, first_sent, now
                    )
                plan = build_plan(
                    spec,
                    domain=domain,
                    servers=servers,
                    postal_address=", ".join(postal.lines()),
                    settings=settings,
                    started_at=_time(status.get("startedAt")),
                    now=now,
                    mailboxes=planned,
                )
                # The sender may read the Secrets this plan names, and no other.
                for manifest in res.campaign_secret_access(
                    namespace, name, str(uid), plan_secrets(plan)
                ):
                    await ctx.kube.apply(manifest)
                await upsert_campaign(conn, uid=uid, namespace=namespace, name=name, plan=plan)
                enqueued = await conn.fetchval(
                    "SELECT enqueued_at IS NOT NULL FROM campaigns WHERE uid = $1", uid
                )
                if not enqueued:
                    added = await enqueue(
                        conn, uid, spec.audience.lists, spec.audience.exclude_lists
                    )
                    kopf.info(body, reason="Enqueued", message=f"{added} deliveries queued")
            if spec.paused:
                # Pausing acknowledges a pause the senders asked for: resuming clears it.
                await clear_pause_reason(conn, uid)
            pause_reason = await get_pause_reason(conn, uid)
            counts = await campaign_counts(conn, uid)
            per_mailbox = await mailbox_counts(conn, uid) if mailbox_days else {}
            window = await window_counts(conn, uid, now - parse_duration(spec.stop_rules.window))
            stopped = stop_rule(spec, window)
            # Sticky until the spec changes (a raised limit, a pause and resume): a window
            # emptied by not sending must not restart the campaign by itself.
            if (
                stopped is None
                and status.get("phase") == "Stopped"
                and status.get("observedGeneration") == generation
            ):
                previous = conditions.find(status.get("conditions"), "Sending") or {}
                stopped = str(previous.get("message") or "stopped by a stop rule")
            start_at = spec.schedule.start_at
            scheduled = (start_at is not None and start_at > now) or not in_window(
                spec.schedule.window, now
            )
            phase = phase_for(
                failures=failures,
                paused=spec.paused,
                pause_reason=pause_reason,
                stopped=stopped,
                scheduled=scheduled,
                counts=counts,
            )
            if await conn.fetchval("SELECT EXISTS (SELECT FROM campaigns WHERE uid = $1)", uid):
                await set_sending(conn, uid, phase == "Sending")
            if phase != status.get("phase"):
                # With the phase it announces: stored only if this transaction commits; a
                # status patch that fails after it re-emits on the next pass (at least once).
                await campaign_state_changed(conn, namespace, name, phase, status.get("phase"))
    else:
        phase = "Pending"
    # While sending, the domain and dedicated servers may not be deleted (inuse-guard).
    used = (
        {("SendingDomain", spec.sending_domain_ref.name)}
        | ({("SmtpServer", n) for n in server_names} if not tier_shared else set())
        | {("SendingDomain", d.ref) for d in rotation_domains}
        | (
            {("SmtpServer", n) for d in rotation_domains for n in d.server_names}
            if not tier_shared
            else set()
        )
        if phase == "Sending"
        else set()
    )
    await mark_in_use(ctx, namespace, name, used)
    observed = _conditions(failures, phase, pause_reason, stopped, counts)
    fields: dict[str, Any] = {"phase": phase}
    if counts:
        fields["counts"] = {k: v for k, v in counts.items() if k != "skipped"}
        total = counts["total"]
        final = total - counts["queued"] - counts["deferred"]
        fields["progress"] = int(100 * final / total) if total else 0
        done = window["done"]
        fields["bounceRate"] = round(window["bounced"] / done, 4) if done else 0.0
        fields["complaintRate"] = round(window["complained"] / done, 4) if done else 0.0
    # Per mailbox: where its warm-up stands and what this campaign sent from it (None: the
    # field is removed, e.g. once spec.rotation is unset).
    fields["mailboxes"] = [
        {
            "address": day.address,
            "dailyLimit": day.daily_limit,
            "warmupDay": day.warmup_day,
            **per_mailbox.get(day.address, {"sent": 0, "queued": 0}),
        }
        for day in mailbox_days
    ] or None
    if phase == "Sending" and not status.get("startedAt"):
        fields["startedAt"] = now.isoformat().replace("+00:00", "Z")
    if phase == "Completed" and not status.get("finishedAt"):
        fields["finishedAt"] = now.isoformat().replace("+00:00", "Z")
    was_active = status.get("phase") == "Sending"
    await run.status.write(observed, **fields)
    if (phase == "Sending") != was_active and tenant is not None:
        await _nudge_tenant(ctx, tenant, namespace, name, phase == "Sending")


def _pause_cause(pause_reason: str) -> str:
    """The condition reason of a pause the sender asked for."""
    return (
        "SenderFault" if pause_reason.startswith(CAMPAIGN_FAULT) else "SenderAuthenticationFailed"
    )


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _conditions(
    failures: Sequence[Failure],
    phase: str,
    pause_reason: str | None,
    stopped: str | None,
    counts: Mapping[str, int],
) -> list[Observed]:
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more: {', '.join(f.reason for f in failures[1:])})"
        message = first.message + (more if len(failures) > 1 else "")
        return [
            Observed("Preflight", "False", first.reason, message),
            Observed("Ready", "False", "PreflightFailed", message),
            Observed("Sending", "False", "PreflightFailed", "no mail leaves before preflight"),
        ]
    observed = [Observed("Preflight", "True", "Passed", "domain verified, servers ready")]
    if pause_reason:
        observed += [
            Observed(
                "Ready",
                "False",
                _pause_cause(pause_reason),
                f"{pause_reason}; fix "
                + ("it" if pause_reason.startswith(CAMPAIGN_FAULT) else "DKIM/SPF/DMARC")
                + ", then set spec.paused and unset it",
            ),
            Observed("Sending", "False", "Paused", "paused by the sender"),
        ]
    elif stopped:
        observed += [
            Observed("Ready", "False", "StopRule", stopped),
            Observed("Sending", "False", "Stopped", stopped),
        ]
    elif phase == "Paused":
        observed += [
            Observed("Ready", "True", "Paused", "paused by spec.paused"),
            Observed("Sending", "False", "Paused", "unset spec.paused to resume"),
        ]
    elif phase == "Scheduled":
        observed += [
            Observed("Ready", "True", "Scheduled", "waiting for startAt or the sending window"),
            Observed("Sending", "False", "OutsideWindow", "outside the schedule"),
        ]
    elif phase == "Completed":
        observed += [
            Observed("Ready", "True", "Completed", f"{counts.get('sent', 0)} messages sent"),
            Observed("Sending", "False", "Completed", "every delivery is final"),
        ]
    else:
        observed += [
            Observed("Ready", "True", "Sending", "the senders are sending"),
            Observed("Sending", "True", "Sending", f"{counts.get('queued', 0)} queued"),
        ]
    return observed


async def _nudge_tenant(
    ctx: Context, tenant: Mapping[str, Any], namespace: str, name: str, sending: bool
) -> None:
    """Make the Tenant controller re-count active campaigns now (it owns the sender's scale)."""
    campaigns = await ctx.kube.list(res.TENANT_API_VERSION, "Campaign", namespace)
    active = sum(
        1
        for c in campaigns
        if (c["metadata"]["name"] == name and sending)
        or (c["metadata"]["name"] != name and res.is_active_campaign(c))
    )
    await ctx.kube.apply(
        {
            "apiVersion": res.TENANT_API_VERSION,
            "kind": "Tenant",
            "metadata": {
                "name": tenant["metadata"]["name"],
                "annotations": {ACTIVE_ANNOTATION: str(active)},
            },
        }
    )


async def cleanup(ctx: Context, body: kopf.Body, retry: int) -> None:
    """A deleted Campaign stops sending at once: close its gate (the ledger stays, for the
    tenant's history; it goes with the tenant's data). The database is outside the cluster,
    hence the finalizer this handler brings."""
    namespace = body.metadata.namespace or ""
    try:
        await mark_in_use(ctx, namespace, body.metadata.name or "", ())
    except Exception as error:
        failure = describe(error)
        raise kopf.TemporaryError(failure.message, delay=backoff_seconds(retry)) from error
    tenant = await get_tenant(ctx.db, namespace.removeprefix(res.NAMESPACE_PREFIX))
    if tenant is None or not namespace.startswith(res.NAMESPACE_PREFIX):
        return
    try:
        async with tenant_connection(ctx.db, tenant.id) as conn:
            await set_sending(conn, uuid.UUID(str(body.metadata.uid)), False)
    except Exception as error:
        failure = describe(error)
        raise kopf.TemporaryError(failure.message, delay=backoff_seconds(retry)) from error


class FinishedResyncs:
    """Which timer passes of a finished Campaign to skip.

    A pass counts all of a campaign's deliveries (and reads its Tenant, domain and servers). A
    Completed campaign (every delivery final) at the generation it was last reconciled at
    changes only by late bounces and complaints about what it sent, so its timer runs every
    `FULL_EVERY` resyncs instead of every one: its counts catch up within that. Any change
    (spec, annotations) still runs at once."""

    FULL_EVERY = 10

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def skip(self, body: Mapping[str, Any], *, timer: bool) -> bool:
        status = body.get("status") or {}
        metadata = body.get("metadata") or {}
        finished = status.get("phase") == "Completed" and status.get(
            "observedGeneration"
        ) == metadata.get("generation")
        if not timer or not finished:
            return False
        uid, now = str(metadata.get("uid")), self._clock()
        last = self._last.get(uid)
        if last is not None and now - last < self.FULL_EVERY * self._interval:
            return True
        self._last[uid] = now
        return False

    def forget(self, uid: str) -> None:
        self._last.pop(uid, None)


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    CampaignController(CampaignSettings.from_env(), config.resync_seconds).attach(registry)
