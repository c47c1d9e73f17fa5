"""The SendingDomain controller: DKIM keys, record publication, verification, rotation, cleanup.

One level-based `reconcile` serves create, update, resume and the timer. Each pass: show the
domain's receivers' block (`status.receiverBlock`, operator/receiver_block.py), read the key
Secret, compute every record, publish what is missing through the provider (only records we own
are ever changed), verify everything on every authoritative nameserver, then advance the DKIM
rotation with what was verified (see `common.dkim.rotation`) and publish again if that changed
the records. The key Secret is written before any record that depends on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from penguinmails.api.v1alpha1.common import parse_duration
from penguinmails.api.v1alpha1.sendingdomain import (
    DnsProviderType,
    SendingDomainSpec,
    SendingDomainStatus,
)
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.blocks import BlockScope, Strikes
from penguinmails.common.db.ledger import mailbox_first_sent
from penguinmails.common.db.tenants import TenantRow
from penguinmails.common.dkim.keys import DkimKeyError, KeySet, KeyState, load_key_set, secret_data
from penguinmails.common.dkim.rotation import (
    RotationPolicy,
    Step,
    advance,
    algorithms_to_generate,
    next_due,
)
from penguinmails.common.dkim.spare import SpareKeys
from penguinmails.common.dkim.written import WrittenKeys
from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy
from penguinmails.common.settings import OperatorSettings
from penguinmails.operator import conditions, receiver_block, rotation
from penguinmails.operator.clock import Clock
from penguinmails.operator.conditions import Observed
from penguinmails.operator.context import Context
from penguinmails.operator.controller import Controller, Logger, Pass
from penguinmails.operator.dkim_timeline import iso, removed_selectors, selector_times
from penguinmails.operator.dns import base
from penguinmails.operator.dns.base import DnsProvider
from penguinmails.operator.dns.config import DnsSettings
from penguinmails.operator.dns.manual import ManualProvider
from penguinmails.operator.dns.powerdns import PowerDnsProvider
from penguinmails.operator.dns.records import (
    Record,
    SmtpServerInfo,
    SpfLimitError,
    desired_records,
    effective_dmarc_policy,
    spf_lookups,
)
from penguinmails.operator.dns.rfc2136 import Rfc2136Provider
from penguinmails.operator.dns.verify import (
    Nameserver,
    Verification,
    find_nameservers,
    resolver_for,
    served,
    verify,
)
from penguinmails.operator.errors import ReconcileError, backoff_seconds
from penguinmails.operator.kube import controller_reference
from penguinmails.operator.secret_access import NotATenantNamespaceError, apply_secret
from penguinmails.operator.tenant_resources import TENANT_LABEL

GROUP, VERSION, PLURAL = "penguinmails.io", "v1alpha1", "sendingdomains"
API_VERSION = f"{GROUP}/{VERSION}"
ROTATE_ANNOTATION = "penguinmails.io/rotate-dkim"
"""Set (or change) this annotation to any value to rotate the DKIM keys now."""


def secret_name(name: str) -> str:
    return f"{name}-dkim"


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# -- inputs ---------------------------------------------------------------------------------


async def _credential(ctx: Context, spec: SendingDomainSpec, namespace: str) -> str:
    ref = spec.dns_provider.credentials_secret_ref
    assert ref is not None  # the model requires it for every provider but manual
    where = f"dnsProvider.credentialsSecretRef ({ref.name}/{ref.key})"
    secret = await ctx.kube.get("v1", "Secret", ref.name, namespace)
    if secret is None:
        raise ReconcileError(
            "CredentialsSecretMissing",
            f"Secret {ref.name} named by {where} does not exist; create it in {namespace}",
        )
    raw = (secret.get("data") or {}).get(ref.key)
    if not raw:
        raise ReconcileError(
            "CredentialsSecretMalformed",
            f"Secret {ref.name} has no key {ref.key} named by {where}; add it",
        )
    try:
        return base64.b64decode(raw).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        raise ReconcileError(
            "CredentialsSecretMalformed", f"the value of {where} is not text; fix it"
        ) from None


async def _check_destination(spec: SendingDomainSpec) -> None:
    """The tenant's DNS server or API must not be inside the cluster or on a private network."""
    config = spec.dns_provider
    if config.powerdns is not None:
        field, host = "spec.dnsProvider.powerdns.apiUrl", urlsplit(config.powerdns.api_url).hostname
    elif config.rfc2136 is not None:
        field, host = "spec.dnsProvider.rfc2136.server", config.rfc2136.server
    else:
        return
    try:
        await EgressPolicy.from_env().check(field, host or "")
    except DestinationNotAllowedError as error:
        raise ReconcileError("DestinationNotAllowed", error.message) from None


async def build_provider(
    ctx: Context, spec: SendingDomainSpec, namespace: str, settings: DnsSettings
) -> DnsProvider:
    config = spec.dns_provider
    if config.type == DnsProviderType.MANUAL:
        return ManualProvider()
    await _check_destination(spec)
    secret = await _credential(ctx, spec, namespace)
    if config.type == DnsProviderType.RFC2136 and config.rfc2136 is not None:
        return Rfc2136Provider(
            config.rfc2136.server,
            config.rfc2136.port,
            config.rfc2136.tsig_key_name,
            secret,
            config.rfc2136.tsig_algorithm.value,
            timeout=settings.timeout,
        )
    assert config.powerdns is not None
    return PowerDnsProvider(
        config.powerdns.api_url, secret, config.powerdns.server_id, timeout=settings.timeout
    )


async def _close(provider: DnsProvider) -> None:
    if isinstance(provider, PowerDnsProvider):
        await provider.close()


async def _smtp_servers(
    ctx: Context, spec: SendingDomainSpec, namespace: str
) -> tuple[list[SmtpServerInfo], list[str]]:
    servers, missing = [], []
    for ref in spec.smtp_server_refs:
        server = await ctx.kube.get(API_VERSION, "SmtpServer", ref.name, namespace)
        if server is None:
            missing.append(ref.name)
            continue
        hostname = str((server.get("spec") or {}).get("hostname") or "")
        ip = (server.get("status") or {}).get("ipAddress")
        if hostname:
            servers.append(SmtpServerInfo(hostname, str(ip) if ip else None))
    return servers, missing


async def _tenant_contact(ctx: Context, spec: SendingDomainSpec, namespace: str) -> list[str]:
    """The owning Tenant's contact email: TLS-RPT's report address when spec.tlsRpt.rua is empty."""
    if not spec.tls_rpt.enabled or spec.tls_rpt.rua:
        return []
    found = await ctx.kube.get("v1", "Namespace", namespace)
    tenant = (((found or {}).get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL)
    if not tenant:
        return []
    obj = await ctx.kube.get(API_VERSION, "Tenant", str(tenant))
    contact = ((obj or {}).get("spec") or {}).get("contactEmail")
    return [str(contact)] if contact else []


async def check_spf(value: str, settings: DnsSettings) -> None:
    """Resolve the include chain, then count lookups (pure) before anything is published."""
    resolver = resolver_for(settings.resolvers, settings.timeout)
    fetched: dict[str, str | None] = {}

    async def fetch_all(record: str, depth: int) -> None:
        for term in record.split()[1:]:
            bare = term.lstrip("+-~?").lower()
            for prefix in ("include:", "redirect="):
                if bare.startswith(prefix) and depth < 12:
                    name = bare[len(prefix) :]
                    if name in fetched:
                        continue
                    fetched[name] = await _spf_at(resolver, name)
                    if fetched[name]:
                        await fetch_all(fetched[name] or "", depth + 1)

    await fetch_all(value, 0)
    try:
        spf_lookups(value, fetched.get)
    except SpfLimitError as error:
        raise ReconcileError("SPFLookupLimit", str(error)) from None


async def _spf_at(resolver: dns.asyncresolver.Resolver, name: str) -> str | None:
    try:
        answer = await resolver.resolve(name.rstrip(".") + ".", "TXT")
    except dns.exception.DNSException:
        return None
    for rdata in answer:
        text = b"".join(rdata.strings).decode(errors="replace")
        if text.lower().startswith("v=spf1"):
            return text
    return None


# -- the pass -------------------------------------------------------------------------------


def _policy(spec: SendingDomainSpec, settings: DnsSettings) -> RotationPolicy:
    return RotationPolicy(
        algorithms=tuple(a.value for a in spec.dkim.algorithms),
        selector_prefix=spec.dkim.selector_prefix,
        rotate_after=parse_duration(spec.dkim.rotate_after),
        retire_after=parse_duration(spec.dkim.retire_after),
        ttl=timedelta(seconds=settings.ttl),
    )


def _secret_manifest(body: kopf.Body, key_set: KeySet) -> dict[str, Any]:
    name, namespace = body.metadata.name, body.metadata.namespace
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(str(name)),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "penguinmails",
                "penguinmails.io/sendingdomain": name,
            },
            "ownerReferences": [controller_reference("SendingDomain", name, body.metadata.uid)],
        },
        "type": "Opaque",
        "data": secret_data(key_set),
    }


WRITTEN = WrittenKeys()
"""The key set this process last wrote or read per key Secret (`_keys` rotates from it)."""
SPARES = SpareKeys()
"""This process's spare RSA keys, made in worker processes started on first use (`_keys` takes
them for a rotation or a domain's first keys)."""


async def advance_with_spares(
    key_set: KeySet,
    policy: RotationPolicy,
    *,
    now: datetime,
    verified: Collection[str],
    rotate_token: str | None,
) -> tuple[KeySet, list[Step]]:
    """`advance` the rotation with new keys taken from `SPARES`. RSA generation is CPU work
    (0.15 s a key): the keys are made in worker processes and awaited here, holding neither
    the event loop nor a thread; `advance` itself is pure and quick."""
    wanted = algorithms_to_generate(
        key_set, policy, now=now, verified=verified, rotate_token=rotate_token
    )
    made = {algorithm: await SPARES.take(algorithm) for algorithm in wanted}
    return advance(
        key_set,
        policy,
        now=now,
        verified=verified,
        rotate_token=rotate_token,
        generate=made.__getitem__,
    )


async def _write_secret(
    ctx: Context, body: kopf.Body, key_set: KeySet, *, resource_version: str | None = None
) -> None:
    """Store `key_set`; with `resource_version`, only over the Secret at that version (else
    the API server answers 409 Conflict)."""
    manifest = _secret_manifest(body, key_set)
    if resource_version is not None:
        manifest["metadata"]["resourceVersion"] = resource_version
    namespace, name = str(body.metadata.namespace), secret_name(str(body.metadata.name))
    try:
        stored = await apply_secret(ctx.kube, manifest)
    except NotATenantNamespaceError as error:
        WRITTEN.forget(namespace, name)
        raise ReconcileError("NotATenantNamespace", str(error)) from None
    except Exception:
        WRITTEN.forget(namespace, name)
        raise
    version = (stored.get("metadata") or {}).get("resourceVersion")
    WRITTEN.remember(namespace, name, version, key_set)


class Work:
    """One reconcile of one SendingDomain; collects what status and events need."""

    def __init__(
        self,
        ctx: Context,
        settings: DnsSettings,
        body: kopf.Body,
        spec: SendingDomainSpec,
        run: Run,
    ) -> None:
        self.ctx = ctx
        self.run = run
        """The pass: its reads are steps a timer pass gives up for a change (`unless_wanted`)."""
        self.settings = settings
        self.body = body
        self.spec = spec
        self.namespace = str(body.metadata.namespace)
        self.name = str(body.metadata.name)
        self.owner = f"{self.namespace}/{self.name}"
        self.zone = spec.zone or spec.domain
        self.status: Mapping[str, Any] = body.status or {}
        self.published: dict[tuple[str, str, str], bool] = {}
        self.repaired: list[Record] = []

    def known_names(self) -> set[str]:
        return {str(r.get("name")) for r in self.status.get("records") or [] if r.get("name")}

    def previously_verified(self) -> set[tuple[str, str, str]]:
        return {
            Record(str(r["name"]), str(r["type"]), str(r["value"])).key
            for r in self.status.get("records") or []
            if r.get("verified")
        }

    async def publish(
        self, provider: DnsProvider, desired: Sequence[Record], nameservers: Sequence[Nameserver]
    ) -> None:
        manual = isinstance(provider, ManualProvider)
        if manual:
            # Nothing to list through the provider: ask the nameservers what the SPF names hold.
            spf_names = [r.name for r in desired if r.type == "TXT" and base.is_spf(r.value)]
            found = await self.run.unless_wanted(
                served(
                    spf_names,
                    "TXT",
                    nameservers,
                    self.settings.nameserver_port,
                    self.settings.timeout,
                )
            )
            self.refuse_spf_conflicts(desired, found)
        else:
            names = base.names_to_read(desired, self.known_names())
            existing = await self.run.unless_wanted(provider.read(self.zone, names))
            # Checked before planning: with a foreign SPF record present, nothing is changed.
            self.refuse_spf_conflicts(desired, existing)
            changes = base.plan(desired, existing, self.owner, self.known_names())
            if changes:
                await provider.apply(self.zone, changes)
            was_verified = self.previously_verified()
            self.repaired = [
                c.record
                for c in changes
                if c.action == "add"
                and c.record.key in was_verified
                and c.record.purpose != "owner"
            ]
        for record in desired:
            self.published[record.key] = not manual

    def refuse_spf_conflicts(self, desired: Sequence[Record], existing: base.Existing) -> None:
        conflicts = base.spf_conflicts(desired, existing, self.owner)
        if conflicts:
            raise ReconcileError("SPFConflict", base.spf_conflict_message(conflicts))

    async def check(
        self, desired: Sequence[Record], nameservers: Sequence[Nameserver]
    ) -> list[Verification]:
        return await self.run.unless_wanted(
            verify(desired, nameservers, self.settings.nameserver_port, self.settings.timeout)
        )


class SendingDomainController(Controller[SendingDomainSpec, SendingDomainStatus]):
    kind = "SendingDomain"
    plural = PLURAL
    spec_model = SendingDomainSpec
    status_model = SendingDomainStatus

    def __init__(
        self, settings: DnsSettings, *, clock: Clock | None = None, block_seconds: float = 60.0
    ) -> None:
        # Many domains at once (an operator restart, a bulk apply) would otherwise fire
        # hundreds of DNS queries and updates together; a bounded number of passes keeps
        # servers answering.
        super().__init__(interval=settings.tick_seconds, clock=clock, concurrency=16)
        self.settings = settings
        self.blocks = receiver_block.Checks(self.clock, block_seconds)

    def due(self, body: kopf.Body, now: datetime) -> bool:
        # The tick is frequent; a domain is re-checked only when its verify interval or a
        # rotation step says so (and, after a failure, no sooner than its backoff), or for
        # receivers' blocks alone once per resync interval.
        return due(body, self.settings, now) or self.blocks.due(str(body.metadata.uid))

    def failure(
        self, run: Run, error: ReconcileError, permanent: bool
    ) -> tuple[list[Observed], dict[str, Any]]:
        return failed(error, permanent), {}

    async def reconcile(self, run: Run) -> None:
        await reconcile(run, self.settings, self.blocks)

    async def cleanup(self, ctx: Context, body: kopf.Body, retry: int, logger: Logger) -> None:
        self.blocks.forget(str(body.metadata.uid))
        WRITTEN.forget(str(body.metadata.namespace), secret_name(str(body.metadata.name)))
        await cleanup(ctx, self.settings, body, retry, logger)


Run = Pass[SendingDomainSpec, SendingDomainStatus]


async def reconcile(run: Run, settings: DnsSettings, blocks: receiver_block.Checks) -> None:
    """Observe (keys, receivers' block, provider, servers, nameservers), act (rotate when asked,
    publish, verify, advance the rotation), then decide the status from what was found
    (`decide_status`, pure)."""
    ctx, body, spec, now = run.ctx, run.body, run.spec, run.now
    work = Work(ctx, settings, body, spec, run)
    if run.timer and not due(body, settings, now):
        # The timer ran for the block alone (SendingDomainController.due).
        await _show_block(run, blocks, None, known=False)
        return
    policy = _policy(spec, settings)
    # First, before anything slow: the first keys, or a rotation asked for.
    key_set = await _keys(run, policy)
    # One tenant lookup per pass, for the mailboxes' warm-up (which needs it) and the block.
    tenant = await receiver_block.tenant_of(ctx, work.namespace) if spec.mailboxes else None
    if not run.timer or blocks.due(run.uid):
        # Before publishing: a block shows even when publishing or verifying fails or waits.
        await _show_block(run, blocks, tenant, known=bool(spec.mailboxes))
    status: Mapping[str, Any] = run.status.current
    work.status = status
    provider: DnsProvider | None = None
    try:
        # A timer pass gives each read up for a change of the domain that comes meanwhile
        # (`Pass.unless_wanted`: a rotate-dkim never waits for a verification); the change
        # pass states everything again. Writes (the provider's update, the Secret, status)
        # are never given up halfway.
        provider = await run.unless_wanted(build_provider(ctx, spec, work.namespace, settings))
        servers, missing = await run.unless_wanted(_smtp_servers(ctx, spec, work.namespace))
        first_verified = _parse_time(status.get("firstVerifiedAt"))
        dmarc_policy = effective_dmarc_policy(spec.dmarc, first_verified, now)

        tls_rpt_fallback = await run.unless_wanted(_tenant_contact(ctx, spec, work.namespace))

        def records_for(keys: KeySet) -> list[Record]:
            return desired_records(
                spec,
                keys=keys.keys,
                servers=servers,
                dmarc_policy=dmarc_policy,
                ttl=settings.ttl,
                tls_rpt_fallback=tls_rpt_fallback,
            )

        desired = records_for(key_set)
        spf = next(r for r in desired if r.purpose == "spf")
        await run.unless_wanted(check_spf(spf.value, settings))
        nameservers = await run.unless_wanted(
            find_nameservers(work.zone, settings.resolvers, settings.timeout)
        )
        await work.publish(provider, desired, nameservers)
        results = await work.check(desired, nameservers)

        verified_selectors = {
            r.record.name.split("._domainkey.")[0]
            for r in results
            if r.verified and r.record.purpose == "dkim"
        }
        token = (body.metadata.annotations or {}).get(ROTATE_ANNOTATION)
        advanced, steps = await advance_with_spares(
            key_set, policy, now=now, verified=verified_selectors, rotate_token=token
        )
        if advanced != key_set:
            await _write_secret(ctx, body, advanced)
            _announce(body, steps)
            key_set = advanced
            again = records_for(key_set)
            if again != desired:
                await work.publish(provider, again, nameservers)
                results = await work.check(again, nameservers)
                desired = again
    finally:
        if provider is not None:
            await _close(provider)

    manual = spec.dns_provider.type == DnsProviderType.MANUAL
    for record in work.repaired:
        kopf.warn(
            body,
            reason="DNSDriftRepaired",
            message=f"{record.type} {record.name} was changed or removed outside PenguinMails; "
            "published it again",
        )
    if manual:
        was = work.previously_verified()
        for r in results:
            if not r.verified and r.record.key in was:
                kopf.warn(
                    body,
                    reason="DNSDrift",
                    message=f"{r.record.type} {r.record.name} no longer verifies; create it "
                    f"with the value {r.record.value!r}",
                )
    mailboxes = await _mailboxes_today(ctx, spec, tenant, now)
    observed, fields = decide_status(
        spec,
        status,
        now,
        zone=work.zone,
        name=work.name,
        published=work.published,
        key_set=key_set,
        policy=policy,
        results=results,
        nameservers=nameservers,
        dmarc_policy=dmarc_policy,
        missing=missing,
        mailboxes=mailboxes,
    )
    await run.status.write(observed, **fields)


async def _show_block(
    run: Run, blocks: receiver_block.Checks, tenant: TenantRow | None, *, known: bool
) -> None:
    """Show the domain's block: of `tenant` when the pass has looked it up (`known`), else of
    the tenant looked up here (inside the read, so that a database failure spares the pass)."""
    domain = run.spec.domain.rstrip(".").lower()

    async def read() -> Strikes | None:
        owner = tenant if known else await receiver_block.tenant_of(run.ctx, run.namespace)
        return await receiver_block.observe(run.ctx, owner, BlockScope.DOMAIN, domain)

    await receiver_block.show(run, blocks, read)


def starts_keys(key_set: KeySet, token: str | None) -> bool:
    """Whether a pass generates keys before anything else (pure): the domain has none yet, or
    `rotate-dkim` holds a value that has not rotated the keys yet."""
    return not key_set.keys or (token is not None and token != key_set.rotate_token)


async def _keys(run: Run, policy: RotationPolicy) -> KeySet:
    """The domain's DKIM keys, from its Secret. The first keys, and a rotation asked for with
    `rotate-dkim`, are made here, before anything slow (the provider, DNS queries to every
    nameserver, the other reads of the pass): stored in the Secret before any record depends
    on them, and a rotation's new key shown in status at once. The rest of the pass publishes
    and verifies them; the per-object lock keeps two passes from making keys at once.

    A rotation starts from the key set this process last wrote or read (`WRITTEN`), not from
    a read of the Secret, and takes the spare RSA key (`SPARES`) instead of generating one:
    its write is conditional on that key set's resourceVersion, and when the Secret changed
    meanwhile (409) the pass reads it and decides again."""
    started = time.perf_counter()
    name = secret_name(run.name)
    token = (run.body.metadata.annotations or {}).get(ROTATE_ANNOTATION)
    remembered = WRITTEN.get(run.namespace, name)
    if remembered and remembered.key_set.keys and starts_keys(remembered.key_set, token):
        try:
            return await _start_keys(
                run, policy, remembered.key_set, token, started, remembered.resource_version
            )
        except ApiException:
            # Changed since (409 Conflict) or gone: read it, and decide on what it holds (an
            # error that is not about this memory comes again from the read path's write).
            WRITTEN.forget(run.namespace, name)
    secret = await run.ctx.kube.get("v1", "Secret", name, run.namespace)
    try:
        key_set = load_key_set((secret or {}).get("data"))
    except DkimKeyError as error:
        WRITTEN.forget(run.namespace, name)
        raise ReconcileError(
            "DKIMSecretMalformed",
            f"Secret {name} is not a DKIM key set ({error}); restore it from a backup, or "
            "delete it to generate new keys (they must then be published)",
        ) from None
    version = ((secret or {}).get("metadata") or {}).get("resourceVersion")
    WRITTEN.remember(run.namespace, name, version, key_set)
    if not starts_keys(key_set, token):
        return key_set
    return await _start_keys(run, policy, key_set, token, started, version)


async def _start_keys(
    run: Run,
    policy: RotationPolicy,
    key_set: KeySet,
    token: str | None,
    started: float,
    resource_version: str | None,
) -> KeySet:
    """Generate the first keys or a rotation's, store them over the Secret at
    `resource_version` (None: it does not exist yet), and show a rotation in status."""
    first = not key_set.keys
    read = time.perf_counter()
    advanced, steps = await advance_with_spares(
        key_set, policy, now=run.now, verified=(), rotate_token=token
    )
    generated = time.perf_counter()
    await _write_secret(run.ctx, run.body, advanced, resource_version=resource_version)
    # Where the time goes (rotate-dkim waits for kopf and the object's lock besides).
    run.logger.info(
        "SendingDomain %s: %s stored (read %.2f s, generated %.2f s, written %.2f s)",
        run.name,
        "first keys" if first else f"rotation ({ROTATE_ANNOTATION}={token})",
        read - started,
        generated - read,
        time.perf_counter() - generated,
    )
    _announce(run.body, steps)
    if not first:
        # Only for a domain reconciled before: a first pass states its conditions with it.
        previous: Mapping[str, Any] | None = dict(run.body.status or {}).get("dkim")
        await run.status.write(dkim=dkim_status(advanced, policy, run.name, previous, run.now))
    return advanced


async def _mailboxes_today(
    ctx: Context, spec: SendingDomainSpec, tenant: TenantRow | None, now: datetime
) -> list[dict[str, Any]]:
    """Each mailbox's warm-up day and limit today (operator/rotation.py, as campaigns plan
    them): the warm-up counts from its first message in the tenant's ledger (outside a
    tenant's namespace, or before any message: day 0)."""
    if not spec.mailboxes:
        return []
    fqdn = spec.domain.lower()
    addresses = [f"{m.local_part}@{fqdn}" for m in spec.mailboxes]
    first_sent: dict[str, datetime] = {}
    if tenant is not None:
        async with tenant_connection(ctx.db, tenant.id) as conn:
            first_sent = await mailbox_first_sent(conn, addresses)
    found = []
    for mailbox, address in zip(spec.mailboxes, addresses, strict=True):
        day = rotation.today(mailbox, address, first_sent.get(address), now)
        found.append(
            {
                "localPart": mailbox.local_part,
                "warmupDay": day.warmup_day,
                "dailyLimit": day.daily_limit,
            }
        )
    return found


def _announce(body: kopf.Body, steps: Sequence[Any]) -> None:
    for step in steps:
        kopf.info(body, reason=step.reason, message=step.message)


def failed(error: ReconcileError, permanent: bool) -> list[Observed]:
    """The conditions of a failed pass: Ready, and DNSPublished unless nothing was tried."""
    observed = [Observed("Ready", "False", error.reason, error.message, permanent=permanent)]
    if error.reason not in ("InvalidSpec", "DKIMSecretMalformed"):
        observed.append(Observed("DNSPublished", "False", error.reason, error.message))
    return observed


def dkim_status(
    key_set: KeySet,
    policy: RotationPolicy,
    name: str,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """`status.dkim` (pure): every selector, its state and timeline, the selectors removed
    lately (kept from the `previous` status), the last and next rotation."""
    selectors = [
        {
            "selector": k.selector,
            "algorithm": k.algorithm,
            "state": "Retiring" if k.state == KeyState.REVOKED else str(k.state),
            "secretName": secret_name(name),
            "createdAt": iso(k.created_at),
            **({"retireAt": iso(k.retire_at)} if k.retire_at else {}),
            **selector_times(k, policy.retire_after),
        }
        for k in key_set.keys
    ]
    activated = [k.activated_at for k in key_set.keys if k.activated_at]
    dkim: dict[str, Any] = {"selectors": selectors}
    removed = removed_selectors(previous, selectors, now)
    if removed:
        dkim["removed"] = removed
    if activated:
        dkim["lastRotation"] = iso(max(activated))
    due = next_due(key_set, policy)
    if due:
        dkim["nextRotation"] = iso(due)
    return dkim


def decide_status(
    spec: SendingDomainSpec,
    status: Mapping[str, Any],
    now: datetime,
    *,
    zone: str,
    name: str,
    published: Mapping[tuple[str, str, str], bool],
    key_set: KeySet,
    policy: RotationPolicy,
    results: Sequence[Verification],
    nameservers: Sequence[Nameserver],
    dmarc_policy: Any,
    missing: Sequence[str],
    mailboxes: list[dict[str, Any]],
) -> tuple[list[Observed], dict[str, Any]]:
    """The conditions and fields of a pass that got through (pure): what was published and
    verified, the keys' states, and whether the domain may send."""
    all_verified = all(r.verified for r in results)
    manual = spec.dns_provider.type == DnsProviderType.MANUAL
    records = []
    for result in results:
        record = result.record
        item: dict[str, Any] = {
            "name": record.name,
            "type": record.type,
            "value": record.value,
            "purpose": record.purpose,
            "ttl": record.ttl,
            "published": published.get(record.key, False),
            "verified": result.verified,
            # A pass runs only when due (verifyInterval), so this is one write per interval.
            "lastChecked": iso(now),
        }
        if result.diff:
            item["diff"] = result.diff
        records.append(item)

    algorithms = set(policy.algorithms)
    active = {k.algorithm for k in key_set.keys if k.state == KeyState.ACTIVE}
    keys_ready = algorithms <= active
    dkim = dkim_status(key_set, policy, name, status.get("dkim"), now)

    unverified = [r for r in results if not r.verified]
    observed = [
        Observed(
            "DKIMKeyReady",
            "True" if keys_ready else "False",
            "KeysActive" if keys_ready else "WaitingForDNS",
            f"signing with {', '.join(k.selector for k in key_set.keys if k.state == 'Active')}"
            if keys_ready
            else "new keys sign once their records are verified on every nameserver and one "
            "TTL has passed",
        ),
        Observed(
            "DNSPublished",
            "True",
            "Manual" if manual else "Published",
            "create the records listed in status.records at your DNS host"
            if manual
            else f"every record is published in zone {zone}",
        ),
        Observed(
            "DNSVerified",
            "True" if all_verified else "False",
            "Verified" if all_verified else "RecordsNotServed",
            f"every record is served by {len(nameservers)} nameserver(s)"
            if all_verified
            else f"{len(unverified)} record(s) not served yet, e.g. {unverified[0].record.type} "
            f"{unverified[0].record.name}: {unverified[0].diff}",
        ),
    ]
    ready = keys_ready and all_verified
    message = (
        "the domain may send"
        if ready
        else "waiting for DNS verification and DKIM activation (see the other conditions)"
    )
    if missing:
        message += f"; SmtpServers not found: {', '.join(missing)} (fix spec.smtpServerRefs)"
    observed.append(
        Observed("Ready", "True" if ready else "False", "Ready" if ready else "Pending", message)
    )
    fields: dict[str, Any] = {
        "zone": zone,
        "nameservers": sorted({ns.name for ns in nameservers}),
        "records": records,
        "dkim": dkim,
        "dmarcPolicy": dmarc_policy.value,
        "mailboxes": mailboxes or None,
    }
    if all_verified:
        fields["firstVerifiedAt"] = status.get("firstVerifiedAt") or iso(now)
        fields["lastVerifiedAt"] = iso(now)
    return observed, fields


def due(body: kopf.Body, settings: DnsSettings, now: datetime) -> bool:
    """Whether the timer should run a pass now: something pending, or verification is due."""
    status: Mapping[str, Any] = body.status or {}
    ready = conditions.find(status.get("conditions"), "Ready") or {}
    if ready.get("status") != "True":
        return True
    dkim = status.get("dkim") or {}
    for selector in dkim.get("selectors") or []:
        retire_at = _parse_time(selector.get("retireAt"))
        if selector.get("state") == "Pending" or (retire_at is not None and now >= retire_at):
            return True
    next_rotation = _parse_time(dkim.get("nextRotation"))
    if next_rotation is not None and now >= next_rotation:
        return True
    try:
        spec: Mapping[str, Any] = body.spec or {}
        interval = parse_duration(str(spec.get("verifyInterval") or "10m"))
    except ValueError:
        return True
    checked = [_parse_time(r.get("lastChecked")) for r in status.get("records") or []]
    last = max((c for c in checked if c), default=None)
    return last is None or now - last >= interval


async def cleanup(
    ctx: Context,
    settings: DnsSettings,
    body: kopf.Body,
    retry: int,
    logger: logging.Logger | kopf.Logger,
) -> None:
    """Remove every record we own for this domain, and nothing else."""
    try:
        spec = SendingDomainSpec.model_validate(dict(body.spec))
    except ValidationError:
        return  # never valid, so never published
    if spec.dns_provider.type == DnsProviderType.MANUAL:
        return
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    zone = spec.zone or spec.domain
    status: Mapping[str, Any] = body.status or {}
    names = {str(r["name"]) for r in status.get("records") or [] if r.get("name")}
    # Every name we could have published at, even if status was lost: the fixed names, the
    # optional ones, and every selector still in the key Secret (garbage-collected after us).
    names |= {
        spec.domain,
        f"_dmarc.{spec.domain}",
        f"{spec.return_path.subdomain}.{spec.domain}",
        f"_mta-sts.{spec.domain}",
        f"_smtp._tls.{spec.domain}",
    }
    provider: DnsProvider | None = None
    try:
        secret = await ctx.kube.get("v1", "Secret", secret_name(name), namespace)
        with contextlib.suppress(DkimKeyError):
            keys = load_key_set((secret or {}).get("data")).keys
            names |= {f"{k.selector}._domainkey.{spec.domain}" for k in keys}
        provider = await build_provider(ctx, spec, namespace, settings)
        existing = await provider.read(zone, base.names_to_read((), names))
        changes = base.plan((), existing, f"{namespace}/{name}", names)
        if changes:
            await provider.apply(zone, changes)
    except ReconcileError as error:
        published = any(r.get("published") for r in status.get("records") or [])
        if not published and (
            error.reason.startswith("Credentials") or error.reason == "DestinationNotAllowed"
        ):
            # Without credentials, or refused the destination, we never published anything:
            # nothing to remove.
            logger.info("SendingDomain %s: nothing was published, nothing to remove", name)
            return
        if retry >= 5 and error.reason in ("CredentialsSecretMissing", "InvalidCredentials"):
            # The credentials are gone for good (e.g. the namespace is being deleted): do not
            # hold the object forever; the records stay and are named in the event.
            kopf.warn(
                body,
                reason="RecordsLeftBehind",
                message=f"could not remove our records from zone {zone}: {error.message}",
            )
            return
        logger.warning("SendingDomain %s not cleaned up yet: %s", name, error.message)
        raise kopf.TemporaryError(error.message, delay=backoff_seconds(retry)) from None
    finally:
        if provider is not None:
            await _close(provider)
    logger.info("SendingDomain %s: removed %d owned record(s)", name, len(changes))


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Attach the SendingDomain controller; DNS settings come from PM_DNS_* variables."""
    controller = SendingDomainController(
        DnsSettings.from_env(), block_seconds=config.resync_seconds
    )
    controller.attach(registry)

    @kopf.on.startup(registry=registry)
    def make_spare_keys(**_: Any) -> None:
        # The first spares are made while kopf lists the objects; each use starts the next.
        SPARES.prepare()

    @kopf.on.cleanup(registry=registry)
    async def stop_key_processes(**_: Any) -> None:
        # Waits for a key in the making (a fraction of a second): no worker outlives us.
        await asyncio.to_thread(SPARES.close)
