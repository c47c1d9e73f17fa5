"""SendingDomain: a domain a tenant sends from, with its authentication records.

The operator generates DKIM keys, computes SPF / DKIM / DMARC / MX (and optionally return-path,
MTA-STS, TLS-RPT) records, publishes them through the DNS provider, verifies them on every
authoritative nameserver and repairs drift.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    AGE_COLUMN,
    DNS_LABEL_PATTERN,
    GROUP_VERSION,
    HTTP_URL_PATTERN,
    LIST_SET,
    MESSAGE_COLUMN,
    READY_COLUMN,
    ConditionedStatus,
    DnsLabel,
    DnsName,
    Duration,
    EmailAddress,
    Fqdn,
    Host,
    KubeModel,
    LocalObjectReference,
    Name253,
    PrinterColumn,
    ReceiverBlock,
    Resource,
    ResourceInfo,
    SecretKeyRef,
    SingleLine,
    StatusModel,
    WarmupSettings,
    cel,
    immutable,
    list_map,
    validations,
)


class SendingDomainConditionType(StrEnum):
    """Condition types of a SendingDomain."""

    READY = "Ready"
    """Keys exist and every record is published and verified: campaigns may use the domain."""
    DKIM_KEY_READY = "DKIMKeyReady"
    """The DKIM key Secrets exist for every configured algorithm."""
    DNS_PUBLISHED = "DNSPublished"
    """The provider accepted every record (always True for the manual provider)."""
    DNS_VERIFIED = "DNSVerified"
    """Every authoritative nameserver answers every record as expected."""


class DnsProviderType(StrEnum):
    """How records get into DNS."""

    RFC2136 = "rfc2136"
    """Dynamic updates (RFC 2136) signed with TSIG, e.g. BIND, Knot, PowerDNS."""
    POWERDNS = "powerdns"
    """The PowerDNS Authoritative HTTP API."""
    MANUAL = "manual"
    """Nothing is published: status.records lists what to create; the operator verifies."""


class TsigAlgorithm(StrEnum):
    """TSIG HMAC algorithm."""

    HMAC_SHA1 = "hmac-sha1"
    HMAC_SHA224 = "hmac-sha224"
    HMAC_SHA256 = "hmac-sha256"
    HMAC_SHA384 = "hmac-sha384"
    HMAC_SHA512 = "hmac-sha512"


class Rfc2136Settings(KubeModel):
    """Settings of the rfc2136 provider; the base64 TSIG secret is in
    dnsProvider.credentialsSecretRef."""

    server: Host = Field(description="Primary nameserver that accepts updates (name or IP).")
    port: int = Field(default=53, ge=1, le=65535, description="Port of the primary nameserver.")
    tsig_key_name: str = Field(
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?)*\.?$",
        min_length=1,
        max_length=253,
        description="Name of the TSIG key, as configured on the nameserver.",
    )
    tsig_algorithm: TsigAlgorithm = Field(
        default=TsigAlgorithm.HMAC_SHA256, description="HMAC algorithm of the TSIG key."
    )


class PowerDnsSettings(KubeModel):
    """Settings of the powerdns provider; the API key is dnsProvider.credentialsSecretRef."""

    api_url: str = Field(
        pattern=HTTP_URL_PATTERN,
        max_length=2048,
        description="Base URL of the PowerDNS API, e.g. https://pdns.example.net:8081.",
    )
    server_id: str = Field(
        default="localhost",
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        max_length=128,
        description="PowerDNS server id.",
    )


class DnsProviderSpec(KubeModel):
    """Where the domain's records are published."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.rfc2136) == (self.type == 'rfc2136')",
                "set dnsProvider.rfc2136 exactly when dnsProvider.type is rfc2136",
                field_path=".rfc2136",
            ),
            cel(
                "has(self.powerdns) == (self.type == 'powerdns')",
                "set dnsProvider.powerdns exactly when dnsProvider.type is powerdns",
                field_path=".powerdns",
            ),
            cel(
                "self.type == 'manual' || has(self.credentialsSecretRef)",
                "dnsProvider.credentialsSecretRef is required unless dnsProvider.type is manual",
                field_path=".credentialsSecretRef",
                reason="FieldValueRequired",
            ),
        )
    )

    type: DnsProviderType = Field(description="rfc2136, powerdns or manual.")
    rfc2136: Rfc2136Settings | None = Field(
        default=None, description="Settings when type is rfc2136."
    )
    powerdns: PowerDnsSettings | None = Field(
        default=None, description="Settings when type is powerdns."
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret key with the provider credential: the base64 TSIG secret (rfc2136) or the "
            "API key (powerdns). Not used by manual."
        ),
    )

    @model_validator(mode="after")
    def _settings_match_type(self) -> DnsProviderSpec:
        if (self.rfc2136 is not None) != (self.type == DnsProviderType.RFC2136):
            raise ValueError("set dnsProvider.rfc2136 exactly when dnsProvider.type is rfc2136")
        if (self.powerdns is not None) != (self.type == DnsProviderType.POWERDNS):
            raise ValueError("set dnsProvider.powerdns exactly when dnsProvider.type is powerdns")
        if self.type != DnsProviderType.MANUAL and self.credentials_secret_ref is None:
            raise ValueError(
                "dnsProvider.credentialsSecretRef is required unless dnsProvider.type is manual"
            )
        return self


class SpfPolicy(StrEnum):
    """The SPF ``all`` mechanism: what receivers should do with mail from other hosts."""

    SOFTFAIL = "~all"
    FAIL = "-all"
    NEUTRAL = "?all"


class SpfSettings(KubeModel):
    """The SPF record (TXT at the domain). The referenced servers' IPs are always authorised."""

    includes: list[DnsName] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "Extra domains to include (include:...), e.g. _spf.relay.example of a relay "
            "provider. SPF allows at most 10 DNS lookups in total."
        ),
        json_schema_extra=LIST_SET,
    )
    policy: SpfPolicy = Field(
        default=SpfPolicy.SOFTFAIL, description="Final mechanism: ~all, -all or ?all."
    )


class DkimAlgorithm(StrEnum):
    """DKIM key algorithm."""

    RSA2048 = "rsa2048"
    ED25519 = "ed25519"


class DkimSettings(KubeModel):
    """DKIM keys: one selector per algorithm, rotated on a schedule."""

    algorithms: list[DkimAlgorithm] = Field(
        default=[DkimAlgorithm.RSA2048, DkimAlgorithm.ED25519],
        min_length=1,
        max_length=2,
        description=(
            "Key algorithms; messages are signed with each (Ed25519 alongside RSA, RFC 8463)."
        ),
        json_schema_extra=LIST_SET,
    )
    selector_prefix: str = Field(
        default="pm",
        pattern=DNS_LABEL_PATTERN,
        min_length=1,
        max_length=20,
        description="Prefix of generated selectors (<prefix>-<algorithm>-<yyyymmdd>).",
    )
    rotate_after: Duration = Field(
        default="2160h", description="Age after which a key is replaced (default 90 days)."
    )
    retire_after: Duration = Field(
        default="168h",
        description=(
            "How long a replaced key stays published so that messages already in flight still "
            "verify (default 7 days)."
        ),
    )


class DmarcPolicy(StrEnum):
    """DMARC policy (p=)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


DMARC_STRICTNESS = {DmarcPolicy.NONE: 0, DmarcPolicy.QUARANTINE: 1, DmarcPolicy.REJECT: 2}
_CEL_STRICTNESS = "{'none': 0, 'quarantine': 1, 'reject': 2}"


class DmarcAlignment(StrEnum):
    """DMARC identifier alignment (adkim= and aspf=)."""

    RELAXED = "relaxed"
    STRICT = "strict"


class DmarcRolloutStep(KubeModel):
    """Tighten the DMARC policy once the domain has been verified for a while."""

    policy: DmarcPolicy = Field(description="Policy to switch to.")
    after: Duration = Field(
        description="Time since the domain was first verified after which the step applies."
    )


class DmarcSettings(KubeModel):
    """The DMARC record (TXT at _dmarc.<domain>)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"!has(self.rollout) || self.rollout.all(s, {_CEL_STRICTNESS}[s.policy] > "
                f"{_CEL_STRICTNESS}[self.policy])",
                "every dmarc.rollout step must be stricter than dmarc.policy",
                field_path=".rollout",
            )
        )
    )

    policy: DmarcPolicy = Field(
        default=DmarcPolicy.NONE,
        description="Policy (p=) to start with: none, quarantine or reject.",
    )
    subdomain_policy: DmarcPolicy | None = Field(
        default=None, description="Policy for subdomains (sp=); unset: same as policy."
    )
    alignment: DmarcAlignment = Field(
        default=DmarcAlignment.RELAXED,
        description="DKIM and SPF identifier alignment (adkim= and aspf=): relaxed or strict.",
    )
    rua: list[EmailAddress] = Field(
        default_factory=list,
        max_length=4,
        description="Addresses that receive aggregate reports (rua=mailto:...).",
        json_schema_extra=LIST_SET,
    )
    ruf: list[EmailAddress] = Field(
        default_factory=list,
        max_length=4,
        description="Addresses that receive failure reports (ruf=mailto:...).",
        json_schema_extra=LIST_SET,
    )
    rollout: list[DmarcRolloutStep] | None = Field(
        default=None,
        max_length=2,
        description=(
            "Optional staged progression, e.g. quarantine after 336h then reject after 720h; "
            "each step must be stricter than policy. The effective policy is in status."
        ),
        json_schema_extra=list_map("policy"),
    )

    @model_validator(mode="after")
    def _rollout_tightens(self) -> DmarcSettings:
        for step in self.rollout or ():
            if DMARC_STRICTNESS[step.policy] <= DMARC_STRICTNESS[self.policy]:
                raise ValueError("every dmarc.rollout step must be stricter than dmarc.policy")
        policies = [s.policy for s in self.rollout or ()]
        if len(set(policies)) != len(policies):
            raise ValueError("dmarc.rollout lists a policy twice")
        return self


class MxHost(KubeModel):
    """One MX target."""

    host: Fqdn = Field(description="Host that receives mail for the domain.")
    priority: int = Field(default=10, ge=0, le=65535, description="MX preference (lower first).")


class MxSettings(KubeModel):
    """MX records, so that replies and bounces reach the platform."""

    enabled: bool = Field(default=True, description="Whether to manage MX records.")
    hosts: list[MxHost] = Field(
        default_factory=list,
        max_length=10,
        description="MX targets; empty: the hostnames of the referenced SmtpServers.",
        json_schema_extra=list_map("host"),
    )


class ReturnPathSettings(KubeModel):
    """A dedicated bounce domain (envelope sender) aligned with the sending domain."""

    enabled: bool = Field(default=False, description="Whether to manage a return-path domain.")
    subdomain: DnsLabel = Field(
        default="bounces",
        description="Label of the return-path domain under the sending domain.",
    )


class MtaStsMode(StrEnum):
    """MTA-STS policy mode (RFC 8461)."""

    TESTING = "testing"
    ENFORCE = "enforce"
    NONE = "none"


class MtaStsSettings(KubeModel):
    """MTA-STS (RFC 8461): _mta-sts TXT record and policy."""

    enabled: bool = Field(default=False, description="Whether to publish MTA-STS.")
    mode: MtaStsMode = Field(default=MtaStsMode.TESTING, description="testing, enforce or none.")
    max_age_seconds: int = Field(
        default=604800,
        ge=86400,
        le=31557600,
        description="Policy max_age in seconds (1 day to 1 year).",
    )


class TlsRptSettings(KubeModel):
    """SMTP TLS reporting (RFC 8460): _smtp._tls TXT record."""

    enabled: bool = Field(default=False, description="Whether to publish a TLS-RPT record.")
    rua: list[EmailAddress] = Field(
        default_factory=list,
        max_length=4,
        description="Addresses that receive TLS reports; empty: the tenant's contact email.",
        json_schema_extra=LIST_SET,
    )


LOCAL_PART_PATTERN = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"
"""RFC 5322 dot-atom: the local parts a mailbox may have (no quoted forms)."""
LocalPart = Annotated[str, Field(pattern=LOCAL_PART_PATTERN, min_length=1, max_length=64)]


class Mailbox(KubeModel):
    """A mailbox of the domain that campaigns send from: one From address with its own daily
    cap and warm-up (a mailbox's reputation is its own, across every campaign using it)."""

    local_part: LocalPart = Field(
        description="Local part of the address (jane in jane@acme.example)."
    )
    display_name: SingleLine | None = Field(
        default=None, max_length=256, description="Display name, e.g. Jane from Acme."
    )
    daily_limit: int = Field(
        default=50,
        ge=1,
        le=100_000,
        description="Messages per day from this mailbox across all campaigns, once warm.",
    )
    warmup: WarmupSettings | None = Field(
        default=None,
        description="Ramp of this mailbox's daily volume up to dailyLimit; unset: none.",
    )
    paused: bool = Field(
        default=False, description="Send nothing new from this mailbox (e.g. while it cools)."
    )


class SendingDomainSpec(KubeModel):
    """Desired state of a SendingDomain."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.zone) || self.domain == self.zone || "
                "self.domain.endsWith('.' + self.zone)",
                "domain must be zone itself or a name under it",
                field_path=".zone",
            )
        )
    )

    domain: Fqdn = Field(
        description="The domain messages are sent from (lower case, no trailing dot). Immutable.",
        json_schema_extra=immutable("domain"),
    )
    zone: Fqdn | None = Field(
        default=None,
        description="DNS zone that holds the records at the provider; unset: the domain itself.",
    )
    dns_provider: DnsProviderSpec = Field(description="Where the records are published.")
    smtp_server_refs: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=20,
        description=(
            "SmtpServers that send for this domain: their IPs are authorised in SPF and their "
            "hostnames are the default MX targets."
        ),
        json_schema_extra=list_map("name"),
    )
    mailboxes: list[Mailbox] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "Mailboxes campaigns rotate across (spec.rotation of a Campaign); each has its own "
            "daily cap and warm-up."
        ),
        json_schema_extra=list_map("localPart"),
    )
    spf: SpfSettings = Field(default_factory=SpfSettings, description="SPF record.")
    dkim: DkimSettings = Field(default_factory=DkimSettings, description="DKIM keys.")
    dmarc: DmarcSettings = Field(default_factory=DmarcSettings, description="DMARC record.")
    mx: MxSettings = Field(default_factory=MxSettings, description="MX records.")
    return_path: ReturnPathSettings = Field(
        default_factory=ReturnPathSettings, description="Return-path (bounce) domain."
    )
    mta_sts: MtaStsSettings = Field(default_factory=MtaStsSettings, description="MTA-STS.")
    tls_rpt: TlsRptSettings = Field(default_factory=TlsRptSettings, description="TLS-RPT.")
    verify_interval: Duration = Field(
        default="10m", description="How often every record is re-checked on every nameserver."
    )

    @model_validator(mode="after")
    def _domain_in_zone(self) -> SendingDomainSpec:
        if self.zone is not None and not (
            self.domain == self.zone or self.domain.endswith("." + self.zone)
        ):
            raise ValueError("domain must be zone itself or a name under it")
        return self


class DnsRecordType(StrEnum):
    """DNS record type."""

    TXT = "TXT"
    CNAME = "CNAME"
    MX = "MX"
    A = "A"
    AAAA = "AAAA"


class RecordPurpose(StrEnum):
    """What a record is for."""

    SPF = "spf"
    DKIM = "dkim"
    DMARC = "dmarc"
    MX = "mx"
    RETURN_PATH = "returnPath"
    MTA_STS = "mtaSts"
    TLS_RPT = "tlsRpt"


class DnsRecordStatus(StatusModel):
    """One record the domain needs, and what DNS says about it."""

    name: str = Field(max_length=253, description="Owner name (FQDN, no trailing dot).")
    type: DnsRecordType = Field(description="Record type.")
    value: str = Field(
        max_length=4096,
        description="Expected value (TXT without quotes; MX as '<priority> <host>').",
    )
    purpose: RecordPurpose | None = Field(default=None, description="What the record is for.")
    ttl: int | None = Field(default=None, ge=0, description="TTL in seconds.")
    published: bool = Field(default=False, description="Whether the provider accepted it.")
    verified: bool = Field(
        default=False, description="Whether every authoritative nameserver serves it."
    )
    last_checked: datetime | None = Field(default=None, description="When it was last checked.")
    diff: str | None = Field(
        default=None,
        max_length=4096,
        description="What a nameserver answered instead, when it differs.",
    )


class DkimSelectorState(StrEnum):
    """Life of a DKIM selector."""

    PENDING = "Pending"
    """Key generated, record not yet verified: not used for signing."""
    ACTIVE = "Active"
    """Used for signing."""
    RETIRING = "Retiring"
    """Replaced; record still published until retireAfter has passed."""


class DkimSelectorStatus(StatusModel):
    """One DKIM key."""

    selector: str = Field(max_length=63, description="Selector (<selector>._domainkey.<domain>).")
    algorithm: DkimAlgorithm = Field(description="Key algorithm.")
    state: DkimSelectorState = Field(description="Pending, Active or Retiring.")
    secret_name: str | None = Field(
        default=None, max_length=253, description="Secret that holds the private key."
    )
    created_at: datetime | None = Field(default=None, description="When the key was generated.")
    retire_at: datetime | None = Field(
        default=None, description="When a retiring key's record will be removed."
    )
    published_at: datetime | None = Field(
        default=None,
        description="When every authoritative nameserver first served its record.",
    )
    activated_at: datetime | None = Field(
        default=None, description="When it started signing (one TTL after publishedAt)."
    )
    retiring_at: datetime | None = Field(
        default=None, description="When it stopped signing (replaced, or its algorithm dropped)."
    )
    remove_at: datetime | None = Field(
        default=None,
        description="When its record is removed (revoked with an empty p= a retireAfter before).",
    )


class RemovedDkimSelector(StatusModel):
    """A key whose record was removed: its life, for the rotation timeline."""

    selector: str = Field(max_length=63, description="Selector (<selector>._domainkey.<domain>).")
    algorithm: DkimAlgorithm = Field(description="Key algorithm.")
    created_at: datetime | None = Field(default=None, description="When the key was generated.")
    published_at: datetime | None = Field(
        default=None, description="When every authoritative nameserver first served its record."
    )
    activated_at: datetime | None = Field(default=None, description="When it started signing.")
    retiring_at: datetime | None = Field(default=None, description="When it stopped signing.")
    removed_at: datetime | None = Field(default=None, description="When its record was removed.")


class DkimStatus(StatusModel):
    """DKIM keys and rotation."""

    selectors: list[DkimSelectorStatus] = Field(
        default_factory=list,
        max_length=16,
        description="Current keys (active, pending and retiring).",
        json_schema_extra=list_map("selector"),
    )
    last_rotation: datetime | None = Field(default=None, description="When keys last rotated.")
    next_rotation: datetime | None = Field(default=None, description="When keys rotate next.")
    removed: list[RemovedDkimSelector] = Field(
        default_factory=list,
        max_length=8,
        description="The last keys whose records were removed, newest first (at most 8).",
        json_schema_extra=list_map("selector"),
    )


class MailboxStatus(StatusModel):
    """Where one mailbox stands today."""

    local_part: str = Field(max_length=64, description="The mailbox (spec.mailboxes[].localPart).")
    warmup_day: int | None = Field(
        default=None, ge=0, description="Day of its warm-up (0 = first); unset: no warm-up."
    )
    daily_limit: int = Field(ge=0, description="Messages it may send today (warm-up applied).")


class SendingDomainStatus(ConditionedStatus):
    """Observed state of a SendingDomain."""

    receiver_block: ReceiverBlock | None = Field(
        default=None,
        description=(
            "Set while receivers block this domain (5.7.x) and senders skip it: why and until when."
        ),
    )

    zone: str | None = Field(default=None, max_length=253, description="Zone records live in.")
    nameservers: list[Name253] = Field(
        default_factory=list,
        max_length=32,
        description="Authoritative nameservers the records were verified on.",
    )
    records: list[DnsRecordStatus] = Field(
        default_factory=list,
        max_length=64,
        description="Every record the domain needs, with its publication and verification state.",
    )
    dkim: DkimStatus | None = Field(default=None, description="DKIM keys and rotation.")
    mailboxes: list[MailboxStatus] = Field(
        default_factory=list, max_length=100, description="Today's limit of every mailbox."
    )
    dmarc_policy: DmarcPolicy | None = Field(
        default=None, description="DMARC policy currently published (after any rollout step)."
    )
    first_verified_at: datetime | None = Field(
        default=None, description="When every record was first verified (start of rollout)."
    )
    last_verified_at: datetime | None = Field(
        default=None, description="When every record was last verified."
    )


class SendingDomain(Resource):
    """A domain a tenant sends from, with its SPF, DKIM, DMARC and MX records."""

    resource_info = ResourceInfo(
        kind="SendingDomain",
        plural="sendingdomains",
        singular="sendingdomain",
        scope="Namespaced",
        short_names=("sd",),
        printer_columns=(
            PrinterColumn("Domain", "string", ".spec.domain", "The sending domain."),
            PrinterColumn("Provider", "string", ".spec.dnsProvider.type", "DNS provider type."),
            PrinterColumn(
                "DMARC", "string", ".status.dmarcPolicy", "Published DMARC policy.", priority=1
            ),
            READY_COLUMN,
            AGE_COLUMN,
            MESSAGE_COLUMN,
        ),
        spec_model=SendingDomainSpec,
        status_model=SendingDomainStatus,
    )

    api_version: Literal["penguinmails.io/v1alpha1"] = Field(
        default=GROUP_VERSION, description="API version (penguinmails.io/v1alpha1)."
    )
    kind: Literal["SendingDomain"] = Field(default="SendingDomain", description="Kind.")
    spec: SendingDomainSpec = Field(description="Desired state.")
    status: SendingDomainStatus | None = Field(default=None, description="Observed state.")
