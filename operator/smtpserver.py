"""The SmtpServer controller: provision through a provider, configure, probe, report.

Built on the framework (operator/controller.py: spec parsing, the per-object lock, backoff,
the status writer, events, metrics, the clock). Each pass (changes, resume and a timer,
PM_SMTP_POLL_SECONDS) observes the provider, decides the next step with the pure
`decide_provisioning` (operator/providers/base.py's contract) and acts, until the server is
configured or something must be waited for. Each pass first shows receivers' blocks of the
server (`status.receiverBlock`, operator/receiver_block.py). Status is written after every
step that matters,
so the provider's id is stored before anything else is done with the server, and a process
killed at any point resumes from what status and the provider say, never creating a second
server. Passes of one object never overlap: a timer tick and a spec change cannot both decide
that no server exists yet.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import kopf
from cryptography.hazmat.primitives import serialization
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import ForbiddenError
from pydantic import ValidationError

from penguinmails.api.v1alpha1.common import SecretKeyRef
from penguinmails.api.v1alpha1.smtpserver import (
    ProviderType,
    ReclaimPolicy,
    RelayTlsMode,
    SmtpServerConditionType,
    SmtpServerPhase,
    SmtpServerSpec,
    SmtpServerStatus,
)
from penguinmails.common.db.blocks import BlockScope, Strikes, pool_server_name
from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy
from penguinmails.common.settings import OperatorSettings, SmtpServerSettings
from penguinmails.operator import conditions, receiver_block
from penguinmails.operator.campaign import SHARED_POOL_LABEL, CampaignSettings
from penguinmails.operator.clock import Clock, SystemClock
from penguinmails.operator.conditions import Observed
from penguinmails.operator.context import Context
from penguinmails.operator.controller import Controller, Logger, Pass
from penguinmails.operator.errors import ReconcileError
from penguinmails.operator.kube import load_config
from penguinmails.operator.mailu import mailboxes
from penguinmails.operator.mailu.admin_api import MailuAdminError
from penguinmails.operator.mailu.install import install_on_vps, use_vps_admin
from penguinmails.operator.probes import dnsbl, rdns, smtp
from penguinmails.operator.probes.resolver import make_resolver
from penguinmails.operator.providers.base import External, Provider, ServerRef
from penguinmails.operator.providers.hostwinds import HostwindsVps
from penguinmails.operator.providers.hostwinds_api import CircuitBreaker, HostwindsClient
from penguinmails.operator.providers.mailu_incluster import MailuInCluster
from penguinmails.operator.providers.relay import Relay
from penguinmails.operator.secret_access import (
    BINDING_NAME,
    NotATenantNamespaceError,
    ensure_secret_writer,
    secret_writer_binding,
)
from penguinmails.operator.status import StatusWriter, Summary

GROUP, VERSION, PLURAL = "penguinmails.io", "v1alpha1", "smtpservers"
KIND = "SmtpServer"

PROVISIONED = SmtpServerConditionType.PROVISIONED.value
MAIL_STACK_READY = SmtpServerConditionType.MAIL_STACK_READY.value
MAILBOXES_READY = SmtpServerConditionType.MAILBOXES_READY.value
REACHABLE = SmtpServerConditionType.REACHABLE.value
REVERSE_DNS = SmtpServerConditionType.REVERSE_DNS_VERIFIED.value
NOT_LISTED = SmtpServerConditionType.NOT_LISTED.value
READY = SmtpServerConditionType.READY.value
PROBE_CONDITIONS = (REACHABLE, REVERSE_DNS, NOT_LISTED)
BLOCKLIST_UNKNOWN = "LookupFailed"
TERMINATED = "Terminated"


@dataclass
class ControllerState:
    """What lives for the operator's lifetime: clients (throttle, circuit)."""

    settings: SmtpServerSettings
    clients: dict[str, HostwindsClient] = field(default_factory=dict)
    mailboxes_synced: mailboxes.Synced = field(default_factory=mailboxes.Synced)
    _core: client.CoreV1Api | None = None
    _rbac: client.RbacAuthorizationV1Api | None = None

    def hostwinds(self, api_key: str) -> HostwindsClient:
        # One client per key: the throttle and the circuit are per account, not per object.
        digest = hashlib.sha256(f"{self.settings.hostwinds_url}\0{api_key}".encode()).hexdigest()
        if digest not in self.clients:
            self.clients[digest] = HostwindsClient(
                api_key,
                url=self.settings.hostwinds_url,
                requests_per_second=self.settings.hostwinds_requests_per_second,
                timeout=self.settings.hostwinds_timeout_seconds,
                backoff_base=self.settings.hostwinds_retry_base_seconds,
                breaker=CircuitBreaker(open_seconds=max(30.0, self.settings.poll_seconds)),
            )
        return self.clients[digest]

    def core(self) -> client.CoreV1Api:
        if self._core is None:
            self._core = client.CoreV1Api(load_config())
        return self._core

    def rbac(self) -> client.RbacAuthorizationV1Api:
        if self._rbac is None:
            self._rbac = client.RbacAuthorizationV1Api(load_config())
        return self._rbac


async def read_secret_keys(
    ctx: Context,
    namespace: str,
    name: str,
    keys: Sequence[str],
    field_path: str,
    *,
    hold: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None,
) -> list[str]:
    """Keys of one Secret, read once; a missing Secret or key names the field to fix.
    ``hold`` is given the Secret as read (to keep it from being deleted while needed)."""
    secret = await ctx.kube.get("v1", "Secret", name, namespace)
    if secret is None:
        raise ReconcileError(
            "SecretNotFound",
            f"{field_path}: Secret {namespace}/{name} does not exist; create it with the "
            f"key {keys[0]}",
            transient=True,
        )
    data = secret.get("data") or {}
    for key in keys:
        if key not in data:
            raise ReconcileError(
                "SecretKeyNotFound",
                f"{field_path}: Secret {namespace}/{name} has no key {key}; add it",
                transient=True,
            )
    values = [base64.b64decode(data[key]).decode() for key in keys]
    if hold is not None:
        await hold(secret)
    return values


async def read_secret_key(
    ctx: Context,
    namespace: str,
    ref: SecretKeyRef,
    field_path: str,
    *,
    hold: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None,
) -> str:
    """One key of a Secret; a missing Secret or key names the field to fix."""
    (value,) = await read_secret_keys(ctx, namespace, ref.name, (ref.key,), field_path, hold=hold)
    return value


# ----------------------------------------------------------------------------------------------
# The provider credentials outlive the namespace's other Secrets
# ----------------------------------------------------------------------------------------------


def credentials_finalizer(uid: str) -> str:
    """One finalizer per SmtpServer: two servers sharing a key each hold and release their own."""
    return f"smtpserver.penguinmails.io/{uid}"


class CredentialsHold:
    """A finalizer on the Secret holding the provider's API key, while this SmtpServer may need
    the key to terminate its server. Namespace deletion removes Secrets in no particular order;
    without it the key can go before the SmtpServer's own finalizer runs, which then cannot
    terminate the VPS (still billed) and blocks the namespace forever.

    Under the chart the operator may write that Secret only through the secret-writer
    RoleBinding in the namespace (operator/secret_access.py), which namespace deletion removes
    too, and which cannot be created again there: the binding is held by the same finalizer,
    and released last."""

    def __init__(self, ctx: Context, state: ControllerState, namespace: str, uid: str) -> None:
        self._ctx = ctx
        self._state = state
        self._namespace = namespace
        self.finalizer = credentials_finalizer(uid)

    async def hold(self, secret: Mapping[str, Any]) -> None:
        metadata = secret.get("metadata") or {}
        if self.finalizer in (metadata.get("finalizers") or []):
            return
        if metadata.get("deletionTimestamp"):
            return  # the API refuses new finalizers on an object being deleted
        try:
            bound = await ensure_secret_writer(self._ctx.kube, self._namespace)
        except NotATenantNamespaceError:
            return  # no write access outside tenant namespaces: nothing to hold
        add = {"metadata": {"finalizers": [self.finalizer]}}
        if bound:
            await self._patch(self._state.rbac().patch_namespaced_role_binding, BINDING_NAME, add)
        await self._patch(self._state.core().patch_namespaced_secret, str(metadata["name"]), add)

    async def release(self, name: str, *, binding: bool = True) -> None:
        """Release the Secret ``name``, then (unless another Secret is still held) the binding."""
        bound = secret_writer_binding(self._namespace) is not None
        if bound:
            try:
                await ensure_secret_writer(self._ctx.kube, self._namespace)
            except NotATenantNamespaceError:
                return
            except ForbiddenError:
                pass  # a terminating namespace: the binding is still there, held by us
        remove = {"metadata": {"$deleteFromPrimitiveList/finalizers": [self.finalizer]}}
        try:
            await self._patch(self._state.core().patch_namespaced_secret, name, remove)
        except ApiException as error:
            if error.status != 403 or not bound or await self._binding_exists():
                raise
            # Released already: our finalizer keeps the binding until our last Secret is
            # released, so without it a namespace being deleted holds nothing of ours. (kopf
            # may run a deletion handler again after it succeeded, on a stale event.)
            return
        if bound and binding:
            await self._patch(
                self._state.rbac().patch_namespaced_role_binding, BINDING_NAME, remove
            )

    async def _binding_exists(self) -> bool:
        try:
            await asyncio.to_thread(
                self._state.rbac().read_namespaced_role_binding, BINDING_NAME, self._namespace
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def _patch(self, patch: Callable[..., Any], name: str, body: Mapping[str, Any]) -> None:
        try:
            # A strategic merge adds or removes this one finalizer, leaving others in place.
            await asyncio.to_thread(
                patch,
                name,
                self._namespace,
                body,
                _content_type="application/strategic-merge-patch+json",
            )
        except ApiException as error:
            if error.status != 404:
                raise


def public_ssh_key(private_key: str, field_path: str) -> str:
    """The OpenSSH public line of a private key (OpenSSH or PEM format)."""
    raw = private_key.encode()
    try:
        if b"OPENSSH PRIVATE KEY" in raw:
            key: Any = serialization.load_ssh_private_key(raw, password=None)
        else:
            key = serialization.load_pem_private_key(raw, password=None)
        public: bytes = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return public.decode()
    except (ValueError, TypeError, AttributeError):
        raise ReconcileError(
            "InvalidSSHKey",
            f"{field_path}: the key is not an unencrypted OpenSSH or PEM private key; "
            "generate one with ssh-keygen -t ed25519 -N ''",
            transient=True,
        ) from None


@dataclass(frozen=True)
class Built:
    provider: Provider
    ssh_private_key: str | None = None


async def build_provider(
    ctx: Context,
    state: ControllerState,
    spec: SmtpServerSpec,
    namespace: str,
    *,
    deleting: bool = False,
    credentials: CredentialsHold | None = None,
) -> Built:
    """The provider of a spec, with its credentials; deleting needs only the API key.
    ``credentials`` holds the API-key Secret for as long as the server may exist."""
    hostwinds = spec.provider.hostwinds
    if hostwinds is not None:
        api_key = await read_secret_key(
            ctx,
            namespace,
            hostwinds.api_key_secret_ref,
            "spec.provider.hostwinds.apiKeySecretRef",
            hold=credentials.hold if credentials is not None else None,
        )
        private = public = ""
        if not deleting:
            ssh_field = "spec.provider.hostwinds.sshKeySecretRef"
            private = await read_secret_key(ctx, namespace, hostwinds.ssh_key_secret_ref, ssh_field)
            public = public_ssh_key(private, ssh_field)
        vps = HostwindsVps(
            state.hostwinds(api_key.strip()),
            hostwinds,
            ssh_public_key=public,
            firewall_profile=state.settings.hostwinds_firewall_profile,
            create_settle_seconds=state.settings.hostwinds_create_settle_seconds,
        )
        return Built(vps, private or None)
    relay = spec.provider.relay
    if relay is not None:
        if not deleting:
            # The operator probes it and the senders relay through it: never the cluster's own
            # services or a private network the platform has not allowed (common/egress.py).
            try:
                await EgressPolicy.from_env().check("spec.provider.relay.host", relay.host)
            except DestinationNotAllowedError as error:
                raise ReconcileError("DestinationNotAllowed", error.message) from None
        if relay.credentials_secret_ref is not None:
            # Only checked here: the sender pods read the credentials themselves.
            await read_secret_keys(
                ctx,
                namespace,
                relay.credentials_secret_ref.name,
                ("username", "password"),
                "spec.provider.relay.credentialsSecretRef",
            )
        return Built(Relay(relay))
    return Built(MailuInCluster(ctx, spec))


# ----------------------------------------------------------------------------------------------
# Probes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeOutcome:
    status: dict[str, Any]
    observed: list[Observed]


async def run_probes(
    settings: SmtpServerSettings,
    spec: SmtpServerSpec,
    ip: str,
    ca_pem: str | None = None,
    *,
    now: datetime | None = None,
) -> ProbeOutcome:
    """Probe the server; ``now`` stamps the result (the pass's clock)."""
    now = now or SystemClock().now()
    relay = spec.provider.relay
    if relay is not None:
        port, mode = relay.port, relay.tls.value
    else:
        port, mode = settings.probe_port, RelayTlsMode.STARTTLS.value
    resolver = make_resolver(settings.dns_resolver, settings.probe_timeout_seconds)
    smtp_result, rdns_result, listings = await asyncio.gather(
        smtp.probe_smtp(
            ip,
            port,
            mode=mode,
            helo_name=spec.hostname,
            server_name=spec.hostname,
            timeout=settings.probe_timeout_seconds,
            ca_pem=ca_pem,
        ),
        rdns.check_fcrdns(ip, spec.hostname, resolver),
        _blocklists(settings, ip, spec.hostname, resolver),
    )
    observed = [
        Observed(
            REACHABLE,
            "True" if smtp_result.reachable else "False",
            "SmtpAnswered" if smtp_result.reachable else _smtp_reason(smtp_result),
            smtp_result.message,
        ),
        Observed(
            REVERSE_DNS,
            "Unknown" if rdns_result.error else "True" if rdns_result.confirmed else "False",
            "LookupFailed"
            if rdns_result.error
            else "ForwardConfirmed"
            if rdns_result.confirmed
            else "NotForwardConfirmed",
            rdns_result.message,
        ),
    ]
    listed = [r for r in listings if r.status is dnsbl.Listing.LISTED]
    unknown = [r for r in listings if r.status is dnsbl.Listing.UNKNOWN]
    if listed:
        observed.append(
            Observed(NOT_LISTED, "False", "Listed", "; ".join(r.describe() for r in listed))
        )
    elif unknown:
        # A warning, not a failure: a list that would not answer (a public resolver asking
        # Spamhaus, a timeout) says nothing about the IP, and Ready does not wait on it.
        observed.append(
            Observed(
                NOT_LISTED,
                "Unknown",
                BLOCKLIST_UNKNOWN,
                "; ".join(r.describe() for r in unknown)
                + "; use your own resolver (PM_DNS_RESOLVER) or a Spamhaus DQS key "
                "(PM_SPAMHAUS_DQS_KEY)",
            )
        )
    else:
        zones = ", ".join(r.zone for r in listings) or "no blocklist configured"
        observed.append(Observed(NOT_LISTED, "True", "NotListed", f"not listed on {zones}"))
    last_probe = {
        "time": _stamp(now),
        "banner": (smtp_result.banner or "")[:512] or None,
        "tls": smtp_result.tls,
        "forwardConfirmedRdns": None if rdns_result.error else rdns_result.confirmed,
        "listedOn": [r.zone for r in listed],
        "latencyMs": smtp_result.latency_ms,
        "error": (smtp_result.error or "")[:1024] or None,
    }
    return ProbeOutcome({k: v for k, v in last_probe.items() if v is not None}, observed)


def _smtp_reason(result: smtp.SmtpProbeResult) -> str:
    if result.banner is None:
        return "NoGreeting"
    if result.tls is False:
        return "TLSFailed" if result.certificate is None else "CertificateInvalid"
    return "SmtpError"


async def _blocklists(
    settings: SmtpServerSettings, ip: str, hostname: str, resolver: Any
) -> list[dnsbl.ListingResult]:
    key = settings.spamhaus_dqs_key
    by_ip = await dnsbl.check_ip(ip, dnsbl.blocklists(settings.ip_blocklists, key), resolver)
    by_name = await dnsbl.check_domain(
        hostname, dnsbl.blocklists(settings.domain_blocklists, key), resolver
    )
    return by_ip + by_name


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def create_in_flight(
    status: Mapping[str, Any], ref: ServerRef, settle_seconds: float, now: datetime
) -> float | None:
    """Seconds left before an earlier, still unlisted order for this object can be given up
    on; None when nothing is in flight or the provider has been watched for the whole window."""
    request = status.get("createRequested") or {}
    if request.get("name") != ref.external_name or not request.get("requestedAt"):
        return None
    requested = datetime.fromisoformat(str(request["requestedAt"]).replace("Z", "+00:00"))
    left = settle_seconds - (now - requested).total_seconds()
    return left if left > 0 else None


# ----------------------------------------------------------------------------------------------
# Decide (pure): what the next step is, from status and what the provider showed
# ----------------------------------------------------------------------------------------------


class Step(StrEnum):
    WAIT_FOR_LISTING = "WaitForListing"
    """Ordered, not listed yet, still inside the settle window: never order again now."""
    ORDER = "Order"
    REORDER = "Reorder"
    """An earlier order was never listed within the whole settle window: order again."""
    RECORD_ID = "RecordId"
    """Found: record its id (and clear the order in flight) before anything else."""
    WAIT_FOR_PROVIDER = "WaitForProvider"
    """Listed but not built yet."""
    CONFIGURE = "Configure"
    """Built and running: reverse DNS, the mail stack, probes."""


def decide_provisioning(
    status: Mapping[str, Any],
    ref: ServerRef,
    external: External | None,
    settle_seconds: float,
    now: datetime,
) -> Step:
    """The next provisioning step (the provider contract, operator/providers/base.py)."""
    if external is None:
        if create_in_flight(status, ref, settle_seconds, now) is not None:
            return Step.WAIT_FOR_LISTING
        return Step.REORDER if status.get("createRequested") else Step.ORDER
    if status.get("providerId") != external.provider_id or status.get("createRequested"):
        return Step.RECORD_ID
    if not external.ready:
        return Step.WAIT_FOR_PROVIDER
    return Step.CONFIGURE


def probe_due(
    probe_seconds: float, status: Mapping[str, Any], generation: int, ip: str, now: datetime
) -> bool:
    """Probe when never probed, the address or the spec changed, or the last probe is old."""
    if probe_seconds <= 0:
        return False
    stamp = (status.get("lastProbe") or {}).get("time")
    if not stamp or status.get("ipAddress") != ip:
        return True
    found = {c.get("type"): c for c in status.get("conditions") or []}
    if any((found.get(t) or {}).get("observedGeneration") != generation for t in PROBE_CONDITIONS):
        return True
    taken = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return (now - taken).total_seconds() >= probe_seconds


# ----------------------------------------------------------------------------------------------
# Ready and phase (pure)
# ----------------------------------------------------------------------------------------------


def _warning(condition: Mapping[str, Any]) -> bool:
    """A condition that is not True but must not hold Ready back: blocklists that could not
    be asked (NotListed=Unknown). A listing (False) still does."""
    return condition.get("type") == NOT_LISTED and (
        condition.get("status") == "Unknown" and condition.get("reason") == BLOCKLIST_UNKNOWN
    )


def _ready(current: Sequence[Mapping[str, Any]] | None, probes_enabled: bool) -> Observed:
    """Ready when every other condition in `current` is True (or only warns); else the first
    that is not, and why."""
    needed = [PROVISIONED, MAIL_STACK_READY, *(PROBE_CONDITIONS if probes_enabled else ())]
    warnings = []
    for type_ in needed:
        condition = conditions.find(current, type_) or {}
        if condition.get("status") == "True":
            continue
        if _warning(condition):
            warnings.append(f"warning: {type_}: {condition.get('message', '')}")
            continue
        reason = str(condition.get("reason") or "Pending")
        message = str(condition.get("message") or "not checked yet")
        return Observed(READY, "False", reason, f"{type_}: {message}")
    if warnings:
        checked = "provisioned, reachable, rDNS verified, not listed where asked; "
        return Observed(READY, "True", "ReadyWithWarnings", checked + "; ".join(warnings))
    return Observed(READY, "True", "Ready", "provisioned, reachable, rDNS verified, not listed")


def _phase(
    current: Sequence[Mapping[str, Any]] | None, ready: Observed, permanent_failure: bool
) -> SmtpServerPhase:
    def status(type_: str) -> object:
        return (conditions.find(current, type_) or {}).get("status")

    if permanent_failure:
        return SmtpServerPhase.FAILED
    if ready.status == "True":
        return SmtpServerPhase.READY
    if status(PROVISIONED) != "True":
        return SmtpServerPhase.PROVISIONING
    if status(MAIL_STACK_READY) != "True":
        return SmtpServerPhase.CONFIGURING
    return SmtpServerPhase.DEGRADED  # up and configured, but a probe found a problem


# ----------------------------------------------------------------------------------------------
# The controller: observe → decide → act
# ----------------------------------------------------------------------------------------------

Writer = StatusWriter[SmtpServerStatus]
Run = Pass[SmtpServerSpec, SmtpServerStatus]


class SmtpServerController(Controller[SmtpServerSpec, SmtpServerStatus]):
    kind = KIND
    plural = PLURAL
    spec_model = SmtpServerSpec
    status_model = SmtpServerStatus

    def __init__(
        self,
        state: ControllerState,
        *,
        clock: Clock | None = None,
        block_seconds: float = 60.0,
        platform_namespace: str = "penguinmails",
    ) -> None:
        settings = state.settings
        super().__init__(
            interval=settings.poll_seconds,
            backoff_base=max(1.0, settings.poll_seconds / 4),
            clock=clock,
        )
        self.state = state
        self.blocks = receiver_block.Checks(self.clock, block_seconds)
        self.platform_namespace = platform_namespace

    def skip(self, body: kopf.Body) -> bool:
        # Being deleted: only the cleanup acts now. A pass here would find the terminated VPS
        # gone and order a new one, or complain that the namespace's Secrets are going.
        return bool(body.metadata.get("deletionTimestamp"))

    def summary(self) -> Summary:
        probes_enabled = self.state.settings.probe_seconds > 0

        def summarize(merged: list[dict[str, Any]]) -> tuple[Observed, dict[str, Any]]:
            # Ready goes with every condition it depends on, in the same patch, and the phase
            # goes with Ready (the pass's last write may still make it Failed).
            ready = _ready(merged, probes_enabled)
            return ready, {"phase": _phase(merged, ready, False).value}

        return summarize

    def invalid(self, message: str) -> tuple[list[Observed], dict[str, Any]]:
        observed, _ = super().invalid(message)
        return observed, {"phase": SmtpServerPhase.FAILED.value}

    def failure(
        self, run: Run, error: ReconcileError, permanent: bool
    ) -> tuple[list[Observed], dict[str, Any]]:
        # The failure belongs to the step the pass had reached; Ready follows from it, and a
        # provider refusal it will not retry stalls the server (kstatus: Failed).
        failed = Observed(run.step, "False", error.reason, error.message)
        merged = conditions.merge_conditions(
            run.status.current.get("conditions"), [failed], run.generation, run.now
        )
        ready = replace(_ready(merged, self.state.settings.probe_seconds > 0), permanent=permanent)
        return [failed, ready], {"phase": _phase(merged, ready, permanent).value}

    async def reconcile(self, run: Run) -> None:
        run.step = PROVISIONED
        if not run.timer or self.blocks.due(run.uid):
            # First: receivers' blocks show even while provisioning waits or fails.
            await receiver_block.show(run, self.blocks, lambda: self._block(run))
        await _walk(run, self.state)
        # Ready, from every condition as they now are, with its phase.
        merged = run.status.current.get("conditions") or []
        ready = _ready(merged, self.state.settings.probe_seconds > 0)
        await run.status.write([ready], phase=_phase(merged, ready, False).value)

    async def _block(self, run: Run) -> Strikes | None:
        """The server's block: a tenant's own (its rows), or a shared-pool server's, counted
        over every tenant (registered or forgotten here as its label says)."""
        if run.namespace == self.platform_namespace:
            shared = run.body.metadata.labels.get(SHARED_POOL_LABEL) == "shared"
            name = pool_server_name(run.namespace, run.name)
            return await receiver_block.pool_server(run.ctx, name, shared)
        tenant = await receiver_block.tenant_of(run.ctx, run.namespace)
        return await receiver_block.observe(run.ctx, tenant, BlockScope.SERVER, run.name)

    async def cleanup(self, ctx: Context, body: kopf.Body, retry: int, logger: Logger) -> None:
        self.blocks.forget(str(body.metadata.uid))
        self.state.mailboxes_synced.forget(str(body.metadata.uid))
        await cleanup(ctx, self, body, logger)
        if body.metadata.namespace == self.platform_namespace:
            name = pool_server_name(self.platform_namespace, str(body.metadata.name))
            await receiver_block.forget(ctx, name)


async def _walk(run: Run, state: ControllerState) -> None:
    ctx, spec, writer, body = run.ctx, run.spec, run.status, run.body
    settings = state.settings
    namespace = run.namespace
    ref = ServerRef(namespace, run.name, run.uid, spec.hostname)
    kind = spec.provider.type
    hold = CredentialsHold(ctx, state, namespace, ref.uid)
    built = await build_provider(ctx, state, spec, namespace, credentials=hold)
    provider = built.provider
    if spec.provider.hostwinds is not None:
        secret = spec.provider.hostwinds.api_key_secret_ref.name
        previous = writer.current.get("credentialsSecret")
        if previous != secret:
            if previous:
                # The key moved to another Secret, held above: keep the binding for it.
                await hold.release(str(previous), binding=False)
            await writer.write(credentialsSecret=secret)

    ordered = False
    external: External | None = await provider.observe(ref, writer.current.get("providerId"))
    while True:
        step = decide_provisioning(
            writer.current, ref, external, provider.create_settle_seconds, run.now
        )
        if step is Step.WAIT_FOR_LISTING or (ordered and step in (Step.ORDER, Step.REORDER)):
            left = create_in_flight(writer.current, ref, provider.create_settle_seconds, run.now)
            waiting = (
                f"{ref.external_name} was ordered at "
                f"{writer.current['createRequested']['requestedAt']} and is not listed yet; "
                f"not ordering again for another {left:.0f}s"
                if left is not None
                else f"waiting for {kind.value} to list {ref.external_name}"
            )
            await writer.write(
                [Observed(PROVISIONED, "False", "CreateRequested", waiting)],
                phase=SmtpServerPhase.PROVISIONING.value,
            )
            return
        if step in (Step.ORDER, Step.REORDER):
            if step is Step.REORDER:
                kopf.warn(
                    body,
                    reason="CreateNotListed",
                    message=f"{ref.external_name} was ordered but never listed within "
                    f"{provider.create_settle_seconds:g}s; ordering again",
                )
            await _order(run, provider, ref)
            ordered = True
            external = await provider.observe(ref, None)
            continue
        assert external is not None
        if step is Step.RECORD_ID:
            # Recorded before anything else is done with it (the provider contract); the order
            # is no longer in flight once its server is listed.
            await writer.write(
                provider=kind.value, providerId=external.provider_id, createRequested=None
            )
            kopf.info(
                body, reason="ProviderIdRecorded", message=f"provider id {external.provider_id}"
            )
            continue
        if step is Step.WAIT_FOR_PROVIDER:
            await writer.write(
                [
                    Observed(
                        PROVISIONED,
                        "False",
                        "Provisioning",
                        f"{kind.value} server {external.provider_id} is {external.state}; "
                        f"checking every {settings.poll_seconds:g}s",
                    )
                ],
                phase=SmtpServerPhase.PROVISIONING.value,
            )
            return
        break
    await _configure(run, state, provider, ref, external, built)


async def _order(run: Run, provider: Provider, ref: ServerRef) -> None:
    writer, kind = run.status, run.spec.provider.type
    # Recorded through the status subresource before the call: a pass that finds nothing
    # listed (the listing lags, or this process was killed right after the call) must not
    # order a second server.
    await writer.write(
        [Observed(PROVISIONED, "False", "Creating", f"ordering {ref.external_name}")],
        provider=kind.value,
        phase=SmtpServerPhase.PROVISIONING.value,
        createRequested={"name": ref.external_name, "requestedAt": _stamp(run.now)},
    )
    run.logger.info("SmtpServer %s: creating %s", run.name, ref.external_name)
    try:
        await provider.create(ref)
    except ReconcileError as error:
        if not error.transient:
            # Refused outright (a bad location, plan, key): nothing was ordered, so a
            # corrected spec may order at once.
            await writer.write(createRequested=None)
        raise
    kopf.info(
        run.body, reason="Creating", message=f"{kind.value} server {ref.external_name} ordered"
    )


async def _configure(
    run: Run,
    state: ControllerState,
    provider: Provider,
    ref: ServerRef,
    external: External,
    built: Built,
) -> None:
    writer, spec, settings = run.status, run.spec, state.settings
    kind = spec.provider.type
    assert external.ip_address is not None
    current = writer.current
    if external.reverse_dns is None and current.get("ipAddress") == external.ip_address:
        # Not every answer carries the rDNS: what this operator set last time still stands.
        external = replace(external, reverse_dns=current.get("reverseDns"))
    await writer.write(ipAddress=external.ip_address)
    external = await provider.update(ref, external)
    fields: dict[str, Any] = {}
    if external.reverse_dns:
        fields["reverseDns"] = external.reverse_dns
    await writer.write(
        [
            Observed(
                PROVISIONED,
                "True",
                "Provisioned",
                f"{kind.value} server {external.provider_id} at {external.ip_address}",
            )
        ],
        **fields,
    )
    ip = external.ip_address
    assert ip is not None
    run.step = MAIL_STACK_READY
    await _mail_stack(run.ctx, state, run.body, spec, writer, external, built)
    run.step = MAILBOXES_READY
    await _mailboxes(run, state, built, external)
    run.step = REACHABLE
    if probe_due(settings.probe_seconds, writer.current, run.generation, ip, run.now):
        relay = spec.provider.relay
        ca_pem = None
        if relay is not None and relay.ca_secret_ref is not None:
            ca_pem = await read_secret_key(
                run.ctx, run.namespace, relay.ca_secret_ref, "spec.provider.relay.caSecretRef"
            )
        outcome = await run_probes(settings, spec, ip, ca_pem, now=run.now)
        await writer.write(outcome.observed, lastProbe=outcome.status)
    elif settings.probe_seconds <= 0:
        await writer.write(
            [
                Observed(t, "Unknown", "ProbesDisabled", "PM_SMTP_PROBE_SECONDS is 0")
                for t in PROBE_CONDITIONS
            ]
        )


async def _mail_stack(
    ctx: Context,
    state: ControllerState,
    body: kopf.Body,
    spec: SmtpServerSpec,
    writer: Writer,
    external: External,
    built: Built,
) -> None:
    kind = spec.provider.type
    if kind is ProviderType.RELAY:
        await writer.write(
            [Observed(MAIL_STACK_READY, "True", "External", "the relay runs its own mail stack")]
        )
        return
    if isinstance(built.provider, MailuInCluster):
        ref = ServerRef(str(writer.namespace), writer.name, str(body.metadata.uid), spec.hostname)
        ready, message = await built.provider.stack_ready(ref)
        reason = "Available" if ready else "DeploymentsNotAvailable"
        await writer.write(
            [Observed(MAIL_STACK_READY, "True" if ready else "False", reason, message)]
        )
        return
    if kind is not ProviderType.HOSTWINDS:
        return
    if not state.settings.mailu_install:
        await writer.write(
            [
                Observed(
                    MAIL_STACK_READY,
                    "True",
                    "NotManaged",
                    "MailU install disabled (PM_MAILU_INSTALL)",
                )
            ]
        )
        return
    done = writer.condition(MAIL_STACK_READY)
    if done.get("status") == "True" and done.get("observedGeneration") == writer.generation:
        return
    await writer.write(phase=SmtpServerPhase.CONFIGURING.value)
    assert built.ssh_private_key is not None and external.ip_address is not None
    await install_on_vps(
        ctx,
        state.settings,
        namespace=str(writer.namespace),
        name=writer.name,
        uid=str(body.metadata.uid),
        spec=spec,
        host=external.ip_address,
        private_key=built.ssh_private_key,
    )
    await writer.write(
        [Observed(MAIL_STACK_READY, "True", "Installed", f"MailU running on {external.ip_address}")]
    )


async def _mailboxes(run: Run, state: ControllerState, built: Built, external: External) -> None:
    """A MailU the platform runs carries the conversation of the SendingDomains referencing it
    (operator/mailu/mailboxes.py); shown as MailboxesReady, which Ready does not wait on."""
    if run.status.condition(MAIL_STACK_READY).get("reason") not in ("Installed", "Available"):
        return  # a relay, MailU not managed here, or not up yet
    ctx, settings = run.ctx, state.settings

    async def open_admin(use: mailboxes.AdminUse) -> mailboxes.Outcome:
        if isinstance(built.provider, MailuInCluster):
            owner = built.provider.owner(ServerRef(run.namespace, run.name, run.uid, ""))
            return await mailboxes.use_cluster_admin(ctx, owner, use)
        assert built.ssh_private_key is not None and external.ip_address is not None
        return await use_vps_admin(
            ctx,
            settings,
            namespace=run.namespace,
            name=run.name,
            uid=run.uid,
            host=external.ip_address,
            private_key=built.ssh_private_key,
            use=use,
        )

    if not run.timer:
        # A change (the spec, a SendingDomain's nudge) sets MailU up anew; timer passes trust
        # what the last complete set-up gave it, while nothing wanted changed.
        state.mailboxes_synced.forget(run.uid)
    try:
        outcome = await mailboxes.reconcile(
            ctx,
            namespace=run.namespace,
            server=run.name,
            uid=run.uid,
            intake_host=settings.intake_host,
            open_admin=open_admin,
            synced=state.mailboxes_synced,
            now=run.now.timestamp(),
        )
    except MailuAdminError as error:
        observed = Observed(MAILBOXES_READY, "False", "MailUAdminFailed", f"{error}; retrying")
    except ReconcileError as error:  # the SSH connection to the VPS
        observed = Observed(MAILBOXES_READY, "False", error.reason, error.message)
    else:
        if outcome is None:
            return  # MailU holds what it was last given, and its condition says so
        if outcome.complete:
            observed = Observed(MAILBOXES_READY, "True", "Configured", outcome.message())
        else:
            observed = Observed(MAILBOXES_READY, "False", "Incomplete", outcome.message())
    await run.status.write([observed])


async def cleanup(
    ctx: Context, controller: SmtpServerController, body: kopf.Body, logger: Logger
) -> None:
    """Terminate the VPS (unless retained) and wait until the provider confirms it is gone; then
    release the credentials Secret."""
    state = controller.state
    writer = controller.writer(ctx, body)
    namespace = str(writer.namespace)
    # kopf may run the cleanup again with the body of an event older than this cleanup's own
    # status writes: read the status as it is now.
    fresh = await ctx.kube.get(controller.api_version, KIND, writer.name, namespace)
    if fresh is None:
        return  # already gone: nothing holds it any more
    writer.current = dict(fresh.get("status") or {})
    hold = CredentialsHold(ctx, state, namespace, str(body.metadata.uid))
    try:
        spec = SmtpServerSpec.model_validate(dict(body.spec))
    except ValidationError:
        logger.warning("SmtpServer %s: invalid spec, nothing to clean up", body.metadata.name)
        spec = None
    held = (
        {str(writer.current["credentialsSecret"])}
        if writer.current.get("credentialsSecret")
        else set()
    )
    hostwinds = spec.provider.hostwinds if spec is not None else None
    if hostwinds is not None:
        held.add(hostwinds.api_key_secret_ref.name)
    if (
        spec is not None
        and hostwinds is not None
        and hostwinds.reclaim_policy is not ReclaimPolicy.RETAIN
        # Recorded before the key is released: a cleanup run again after that (kopf may) must
        # not need the key, which is then gone with the namespace.
        and writer.condition(PROVISIONED).get("reason") != TERMINATED
    ):
        await _terminate(ctx, state, body, spec, writer, controller.clock.now())
        await writer.write(
            [Observed(PROVISIONED, "False", TERMINATED, "the VPS is terminated")],
            phase=SmtpServerPhase.DELETING.value,
        )
    # Cluster children go by ownership; a relay or a retained VPS stays.
    names = sorted(held)
    for name in names:
        # The binding that lets us write the Secrets goes last.
        await hold.release(name, binding=name == names[-1])


async def _terminate(
    ctx: Context,
    state: ControllerState,
    body: kopf.Body,
    spec: SmtpServerSpec,
    writer: Writer,
    now: datetime,
) -> None:
    ref = ServerRef(str(writer.namespace), writer.name, str(body.metadata.uid), spec.hostname)
    try:
        built = await build_provider(ctx, state, spec, str(writer.namespace), deleting=True)
        await writer.write(phase=SmtpServerPhase.DELETING.value)
        gone = await built.provider.delete(ref, writer.current.get("providerId"))
    except ReconcileError as error:
        message = error.message
        if not error.transient:
            # A VPS may exist that only a working key can terminate: never guess it away.
            message += (
                "; the VPS cannot be terminated until this is fixed (or set "
                "spec.provider.hostwinds.reclaimPolicy: Retain to delete without terminating)"
            )
        kopf.warn(body, reason="CleanupBlocked", message=message)
        raise kopf.TemporaryError(message, delay=state.settings.poll_seconds) from error
    if not gone:
        raise kopf.TemporaryError(
            f"waiting for Hostwinds to confirm {ref.external_name} is terminated",
            delay=state.settings.poll_seconds,
        )
    left = create_in_flight(writer.current, ref, built.provider.create_settle_seconds, now)
    if left is not None:
        # An order not listed yet would be billed with nobody left to terminate it.
        raise kopf.TemporaryError(
            f"{ref.external_name} was ordered and is not listed yet; watching for it another "
            f"{left:.0f}s so it can be terminated",
            delay=state.settings.poll_seconds,
        )
    kopf.info(body, reason="Terminated", message=f"VPS {ref.external_name} terminated")


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Attach the SmtpServer controller; provider and probe settings come from PM_* variables."""
    SmtpServerController(
        ControllerState(SmtpServerSettings.from_env()),
        block_seconds=config.resync_seconds,
        platform_namespace=CampaignSettings.from_env().platform_namespace,
    ).attach(registry)
    mailboxes.watch_sending_domains(registry)
