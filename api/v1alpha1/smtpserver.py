"""SmtpServer: a server that sends a tenant's mail.

Exactly one provider: a Hostwinds VPS running the MailU stack, a MailU deployment inside the
cluster, or an existing external relay.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    AGE_COLUMN,
    GROUP_VERSION,
    MESSAGE_COLUMN,
    READY_COLUMN,
    ConditionedStatus,
    Fqdn,
    Host,
    KubeModel,
    Name253,
    PrinterColumn,
    Quantity,
    ReceiverBlock,
    Resource,
    ResourceInfo,
    SecretKeyRef,
    SecretRef,
    StatusModel,
    WarmupSettings,
    cel,
    immutable,
    validations,
)


class SmtpServerConditionType(StrEnum):
    """Condition types of an SmtpServer."""

    READY = "Ready"
    """Provisioned, mail stack ready, reachable, rDNS verified and not listed: campaigns may
    use it."""
    PROVISIONED = "Provisioned"
    """The VPS / in-cluster deployment exists (always True for a relay)."""
    MAIL_STACK_READY = "MailStackReady"
    """MailU is installed and configured (VPS) or its Deployments are available (in-cluster);
    True for a relay, which runs its own."""
    REACHABLE = "Reachable"
    """The last probe got an SMTP banner and (unless tls is none) a working STARTTLS/TLS."""
    REVERSE_DNS_VERIFIED = "ReverseDNSVerified"
    """The IP's PTR record names spec.hostname and the hostname resolves back to the IP."""
    NOT_LISTED = "NotListed"
    """The IP is on none of the checked DNS blocklists."""
    MAILBOXES_READY = "MailboxesReady"
    """MailU (VPS or in-cluster) holds the referencing SendingDomains, their mailboxes with a
    copy forwarded to the tenant's reply address, and the return-path domains relayed to the
    intake; the message names what is missing and the fix. Ready does not wait on it."""


class SmtpServerPhase(StrEnum):
    """Coarse lifecycle phase (conditions carry the details)."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    CONFIGURING = "Configuring"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    DELETING = "Deleting"


class SmtpPool(StrEnum):
    """Whether a server serves one tenant only."""

    SHARED = "shared"
    DEDICATED = "dedicated"


class ProviderType(StrEnum):
    """Which provider block of spec.provider is set (the key's name)."""

    HOSTWINDS = "hostwinds"
    MAILU_IN_CLUSTER = "mailuInCluster"
    RELAY = "relay"


class RelayTlsMode(StrEnum):
    """How to secure the connection to a relay."""

    NONE = "none"
    """Plain SMTP; only for a relay on a trusted network."""
    STARTTLS = "starttls"
    """SMTP, upgraded with STARTTLS (usually port 587 or 25); refuses to send without it."""
    TLS = "tls"
    """Implicit TLS from the first byte (SMTPS, usually port 465)."""


class ReclaimPolicy(StrEnum):
    """What happens to an external resource when its object is deleted."""

    DELETE = "Delete"
    RETAIN = "Retain"


class ServiceType(StrEnum):
    """Kubernetes Service type."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class HostwindsProvider(KubeModel):
    """A Hostwinds cloud VPS, created through the Hostwinds API and configured with MailU."""

    location_id: int = Field(
        ge=1, le=1_000_000, description="Hostwinds location (data centre) id (location_id)."
    )
    plan_id: int = Field(
        ge=1, le=1_000_000_000, description="Hostwinds product/plan id of the VPS size (rid)."
    )
    template: str = Field(
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        min_length=1,
        max_length=128,
        description="Hostwinds OS image (template) to install, e.g. a Debian image id.",
    )
    api_key_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the Hostwinds API key."
    )
    ssh_key_secret_ref: SecretKeyRef = Field(
        description=(
            "Secret key holding the OpenSSH private key the operator uses to configure the VPS; "
            "its public key is installed on the VPS."
        )
    )
    reclaim_policy: ReclaimPolicy = Field(
        default=ReclaimPolicy.DELETE,
        description="Delete: cancel the VPS when the SmtpServer is deleted. Retain: keep it.",
    )


class MailuInClusterProvider(KubeModel):
    """A MailU deployment (Postfix, Rspamd...) in the tenant's namespace; only where the
    namespace enforces Pod Security baseline (the business and enterprise tiers)."""

    version: str = Field(
        default="2024.06",
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        max_length=64,
        description="MailU release (image tag) to run.",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description=(
            "Replicas of MailU's front (the SMTP/IMAP proxy); above 1 its certificate volume "
            "is ReadWriteMany. The other components keep state and run one replica each."
        ),
    )
    storage_size: Quantity = Field(
        default="10Gi",
        description="Size of each of the mail queue and mailbox volumes (the others get 1Gi).",
    )
    storage_class_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="StorageClass of the volume; unset: the cluster's default.",
    )
    service_type: ServiceType = Field(
        default=ServiceType.LOAD_BALANCER,
        description="How the SMTP service is exposed (inbound mail: bounces and replies).",
    )


class RelayProvider(KubeModel):
    """An existing SMTP relay that accepts mail for onward delivery."""

    host: Host = Field(description="Host name or IP address of the relay.")
    port: int = Field(default=587, ge=1, le=65535, description="TCP port of the relay.")
    tls: RelayTlsMode = Field(
        default=RelayTlsMode.STARTTLS,
        description="none (plain), starttls (upgrade, required) or tls (implicit TLS).",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with keys username and password (type kubernetes.io/basic-auth) for SMTP "
            "AUTH; unset: no authentication."
        ),
    )
    ca_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key with PEM CA certificates to trust for the relay's certificate.",
    )


_PROVIDER_COUNT = (
    "(has(self.hostwinds) ? 1 : 0) + (has(self.mailuInCluster) ? 1 : 0) + (has(self.relay) ? 1 : 0)"
)


class SmtpProvider(KubeModel):
    """Where the server comes from: set exactly one of hostwinds, mailuInCluster, relay."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"{_PROVIDER_COUNT} == 1",
                "set exactly one of provider.hostwinds, provider.mailuInCluster, provider.relay",
            ),
            cel(
                "has(self.hostwinds) == has(oldSelf.hostwinds) && "
                "has(self.mailuInCluster) == has(oldSelf.mailuInCluster) && "
                "has(self.relay) == has(oldSelf.relay)",
                "the provider type cannot change: create a new SmtpServer instead",
            ),
        )
    )

    hostwinds: HostwindsProvider | None = Field(
        default=None, description="Provision a Hostwinds VPS running MailU."
    )
    mailu_in_cluster: MailuInClusterProvider | None = Field(
        default=None,
        description=(
            "Run MailU inside the cluster, in the tenant's namespace (business and enterprise "
            "tiers: MailU's images need Pod Security baseline)."
        ),
    )
    relay: RelayProvider | None = Field(default=None, description="Use an existing SMTP relay.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SmtpProvider:
        count = sum(p is not None for p in (self.hostwinds, self.mailu_in_cluster, self.relay))
        if count != 1:
            raise ValueError(
                "set exactly one of provider.hostwinds, provider.mailuInCluster, provider.relay"
            )
        return self

    @property
    def type(self) -> ProviderType:
        """Which provider is set."""
        if self.hostwinds is not None:
            return ProviderType.HOSTWINDS
        if self.mailu_in_cluster is not None:
            return ProviderType.MAILU_IN_CLUSTER
        return ProviderType.RELAY


class SmtpServerSpec(KubeModel):
    """Desired state of an SmtpServer."""

    provider: SmtpProvider = Field(
        description="Where the server comes from (exactly one provider; cannot change)."
    )
    hostname: Fqdn = Field(
        description=(
            "Fully qualified host name of the server: its HELO/EHLO name and the target of its "
            "reverse DNS (PTR). Immutable."
        ),
        json_schema_extra=immutable("hostname"),
    )
    pool: SmtpPool = Field(
        default=SmtpPool.SHARED,
        description=(
            "dedicated: the server and its IP serve this tenant only (counts against the tier's "
            "dedicated servers); shared: it may also serve other tenants of the shared pool."
        ),
    )
    warmup: WarmupSettings = Field(
        default_factory=WarmupSettings,
        description="Warm-up of a new IP: daily volume grows gradually from a small start.",
    )
    weight: int = Field(
        default=100,
        ge=0,
        le=1000,
        description=(
            "Share of messages this server carries relative to the other servers a mailbox "
            "rotates across (100 each: even); 0: drain (nothing new is sent through it)."
        ),
    )
    max_per_hour: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Hard cap of messages per hour through this server; unset: no cap.",
    )


class ProbeResult(StatusModel):
    """The outcome of the last health probe."""

    time: datetime = Field(description="When the probe ran.")
    banner: str | None = Field(
        default=None, max_length=512, description="SMTP greeting (220 line) received."
    )
    tls: bool | None = Field(
        default=None, description="Whether STARTTLS or implicit TLS succeeded."
    )
    forward_confirmed_rdns: bool | None = Field(
        default=None,
        description="Whether the PTR names spec.hostname and the hostname resolves to the IP.",
    )
    listed_on: list[Name253] = Field(
        default_factory=list,
        max_length=64,
        description="DNS blocklists (zone names) on which the IP is listed.",
    )
    latency_ms: int | None = Field(
        default=None, ge=0, description="Time to the SMTP greeting, in milliseconds."
    )
    error: str | None = Field(
        default=None, max_length=1024, description="Why the probe failed, if it did."
    )


class WarmupStatus(StatusModel):
    """Progress of warm-up."""

    started_at: datetime | None = Field(default=None, description="When warm-up began.")
    day: int | None = Field(default=None, ge=0, description="Current warm-up day (0 = first).")
    daily_limit: int | None = Field(
        default=None, ge=0, description="Messages allowed today; unset once warm-up is complete."
    )
    complete: bool = Field(default=False, description="Whether warm-up has finished.")


class CreateRequest(StatusModel):
    """A create sent to the provider and not yet seen in its listing."""

    name: Name253 = Field(
        description="The unique name the server was ordered under (Hostwinds srvrname)."
    )
    requested_at: datetime = Field(
        description=(
            "When the order was sent. Nothing is ordered again for this object until the "
            "provider has listed the server, or has failed to for the whole settle window "
            "(PM_HOSTWINDS_CREATE_SETTLE_SECONDS)."
        )
    )


class SmtpServerStatus(ConditionedStatus):
    """Observed state of an SmtpServer."""

    receiver_block: ReceiverBlock | None = Field(
        default=None,
        description=(
            "Set while receivers block this server's address (5.7.x) and senders skip it: why and "
            "until when."
        ),
    )

    phase: SmtpServerPhase | None = Field(default=None, description="Coarse lifecycle phase.")
    provider: ProviderType | None = Field(default=None, description="Provider in use.")
    provider_id: str | None = Field(
        default=None,
        max_length=128,
        description=(
            "Id of the external resource (Hostwinds serviceid), recorded before anything else "
            "is done with it."
        ),
    )
    create_requested: CreateRequest | None = Field(
        default=None,
        description=(
            "A create in flight, written before the provider is asked, cleared once the "
            "server is listed."
        ),
    )
    credentials_secret: Name253 | None = Field(
        default=None,
        description=(
            "The provider credentials Secret this object holds a finalizer on, so that deleting "
            "the namespace cannot remove the key before the server is terminated."
        ),
    )
    ip_address: str | None = Field(
        default=None, max_length=45, description="Public IP address mail is sent from."
    )
    reverse_dns: str | None = Field(
        default=None, max_length=253, description="PTR name currently published for the IP."
    )
    last_probe: ProbeResult | None = Field(default=None, description="The last health probe.")
    warmup: WarmupStatus | None = Field(default=None, description="Warm-up progress.")


class SmtpServer(Resource):
    """A server that sends a tenant's mail."""

    resource_info = ResourceInfo(
        kind="SmtpServer",
        plural="smtpservers",
        singular="smtpserver",
        scope="Namespaced",
        short_names=("smtp",),
        printer_columns=(
            PrinterColumn("Hostname", "string", ".spec.hostname", "HELO name and PTR target."),
            PrinterColumn("IP", "string", ".status.ipAddress", "Sending IP address."),
            PrinterColumn("Provider", "string", ".status.provider", "Provider in use.", priority=1),
            PrinterColumn("Pool", "string", ".spec.pool", "shared or dedicated.", priority=1),
            PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase."),
            READY_COLUMN,
            AGE_COLUMN,
            MESSAGE_COLUMN,
        ),
        spec_model=SmtpServerSpec,
        status_model=SmtpServerStatus,
    )

    api_version: Literal["penguinmails.io/v1alpha1"] = Field(
        default=GROUP_VERSION, description="API version (penguinmails.io/v1alpha1)."
    )
    kind: Literal["SmtpServer"] = Field(default="SmtpServer", description="Kind.")
    spec: SmtpServerSpec = Field(description="Desired state.")
    status: SmtpServerStatus | None = Field(default=None, description="Observed state.")
