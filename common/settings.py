"""Settings read from the environment, shared by every component.

Each setting is a `PM_*` variable; the defaults suit the local stack started by `make run`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from penguinmails.common.db.tenants import TENANT_DATA_RETENTION

BILLING_EVENT_RETENTION = timedelta(days=30)
"""How long Stripe's processed events are remembered (billing_events): well past Stripe's
automatic retries (up to 3 days in live mode) and as long as Stripe itself lists an event (30
days), so any redelivery, even one resent by hand from the Dashboard, is still a duplicate."""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise ValueError(
            f"{name}={raw!r} is not a number: set it to seconds, e.g. {default}"
        ) from error


@dataclass(frozen=True)
class OperatorSettings:
    database_url: str
    """PostgreSQL DSN (PM_DATABASE_URL); required: tenants are recorded there."""
    sender_image: str
    """Image of the sender pods (PM_SENDER_IMAGE)."""
    sender_secret: str
    """`namespace/name` of the platform Secret whose PM_* keys every tenant's sender gets
    (PM_SENDER_SECRET); empty: no copy is made (the local stack runs no sender pods)."""
    resync_seconds: float
    """How often a timer re-checks each object for drift (PM_RESYNC_SECONDS)."""
    tenant_data_retention: timedelta
    """How long a deleted tenant's rows are kept before the purge (PM_TENANT_RETENTION_DAYS)."""
    metrics_port: int
    """Port of the Prometheus /metrics endpoint; 0 disables it (PM_METRICS_PORT)."""
    purge_interval_seconds: float
    """How often deleted tenants past their retention, and billing events past theirs, are
    purged (PM_PURGE_INTERVAL_SECONDS)."""
    billing_event_retention: timedelta = BILLING_EVENT_RETENTION
    """How long processed Stripe events are kept (PM_BILLING_EVENT_RETENTION_DAYS)."""
    notices: NoticeSettings = field(default_factory=lambda: NoticeSettings.from_env({}))
    """Usage notices by e-mail (PM_NOTICE_*)."""
    full_resync_seconds: float = 36000.0
    """How often a Tenant's timer pass re-applies everything instead of trusting the watches
    (PM_FULL_RESYNC_SECONDS; 10 hours, controller-runtime's default sync period)."""

    @classmethod
    def from_env(cls) -> OperatorSettings:
        database_url = os.environ.get("PM_DATABASE_URL", "")
        if not database_url:
            raise ValueError(
                "PM_DATABASE_URL is not set: point it at the PostgreSQL database, "
                "e.g. postgresql://user@127.0.0.1:5432/penguinmails"
            )
        return cls(
            database_url=database_url,
            sender_secret=os.environ.get("PM_SENDER_SECRET", ""),
            sender_image=os.environ.get(
                "PM_SENDER_IMAGE", "ghcr.io/penguinmails/penguinmails:0.1.0"
            ),
            resync_seconds=_env_float("PM_RESYNC_SECONDS", 60.0),
            full_resync_seconds=_env_float("PM_FULL_RESYNC_SECONDS", 36000.0),
            tenant_data_retention=timedelta(
                days=_env_float("PM_TENANT_RETENTION_DAYS", TENANT_DATA_RETENTION.days)
            ),
            metrics_port=int(_env_float("PM_METRICS_PORT", 8080)),
            purge_interval_seconds=_env_float("PM_PURGE_INTERVAL_SECONDS", 3600.0),
            billing_event_retention=_billing_event_retention(),
            notices=NoticeSettings.from_env(),
        )


def _billing_event_retention() -> timedelta:
    days = _env_float("PM_BILLING_EVENT_RETENTION_DAYS", BILLING_EVENT_RETENTION.days)
    if days < 3:
        # Shorter than Stripe's retries, a redelivered event would be processed twice.
        raise ValueError(
            f"PM_BILLING_EVENT_RETENTION_DAYS={days:g} is shorter than Stripe's 3 days of "
            f"retries: set it to 3 or more, e.g. {BILLING_EVENT_RETENTION.days}"
        )
    return timedelta(days=days)


NOTICE_TLS_MODES = ("starttls", "tls", "none")
INVITATION_FROM = "PenguinMails <no-reply@penguinmails.io>"
"""From of the invitation e-mails unless PM_API_INVITATION_FROM says otherwise."""


@dataclass(frozen=True)
class NoticeSettings:
    """Usage notices e-mailed to a Tenant's spec.contactEmail through the platform's relay
    (operator/notices.py, docs/billing.md). Without a host no e-mail is sent (the webhook
    event still is)."""

    smtp_host: str
    """The relay (PM_NOTICE_SMTP_HOST); empty: no e-mail."""
    smtp_port: int
    """Its port (PM_NOTICE_SMTP_PORT, 587)."""
    smtp_tls: str
    """`starttls` (required), `tls` (implicit, port 465) or `none` (PM_NOTICE_SMTP_TLS)."""
    smtp_username: str
    """AUTH user (PM_NOTICE_SMTP_USERNAME); empty: no AUTH."""
    smtp_password: str = field(repr=False)
    """AUTH password (PM_NOTICE_SMTP_PASSWORD, from a Secret). Never logged or shown."""
    from_address: str = "PenguinMails Billing <billing@penguinmails.io>"
    """From of the notices (PM_NOTICE_FROM); its domain also names the Message-IDs."""
    billing_url: str = "https://app.penguinmails.io/billing"
    """Where a customer upgrades, quoted in the notices (PM_NOTICE_BILLING_URL)."""
    timeout_seconds: float = 30.0
    """Timeout of each SMTP step (PM_NOTICE_SMTP_TIMEOUT_SECONDS)."""
    ca_pem: str = ""
    """PEM certificates trusted for the relay's TLS (PM_NOTICE_SMTP_CA), e.g. a cluster's own
    CA; empty: the system's trust store. The relay's certificate is always verified."""

    @property
    def enabled(self) -> bool:
        return bool(self.smtp_host)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NoticeSettings:
        source = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return source.get(name) or default

        tls = get("PM_NOTICE_SMTP_TLS", "starttls").lower()
        if tls not in NOTICE_TLS_MODES:
            raise ValueError(
                f"PM_NOTICE_SMTP_TLS={tls!r} is not a TLS mode: set it to one of "
                + ", ".join(NOTICE_TLS_MODES)
            )
        raw_port = get("PM_NOTICE_SMTP_PORT", "587")
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            raise ValueError(
                f"PM_NOTICE_SMTP_PORT={raw_port!r} is not a port: set it to 1-65535, e.g. 587"
            )
        from_address = get("PM_NOTICE_FROM", cls.from_address)
        if "@" not in from_address:
            raise ValueError(
                f"PM_NOTICE_FROM={from_address!r} has no address: set it to e.g. "
                "'PenguinMails Billing <billing@example.com>'"
            )
        raw_timeout = get("PM_NOTICE_SMTP_TIMEOUT_SECONDS", "30")
        try:
            timeout = float(raw_timeout)
        except ValueError as error:
            raise ValueError(
                f"PM_NOTICE_SMTP_TIMEOUT_SECONDS={raw_timeout!r} is not a number: set it to "
                "seconds, e.g. 30"
            ) from error
        ca_pem = get("PM_NOTICE_SMTP_CA", "")
        if ca_pem and "-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise ValueError(
                "PM_NOTICE_SMTP_CA holds no PEM certificate: set it to the relay's CA "
                "certificate(s), -----BEGIN CERTIFICATE----- ..., or leave it empty"
            )
        return cls(
            smtp_host=get("PM_NOTICE_SMTP_HOST", ""),
            smtp_port=int(raw_port),
            smtp_tls=tls,
            smtp_username=get("PM_NOTICE_SMTP_USERNAME", ""),
            smtp_password=get("PM_NOTICE_SMTP_PASSWORD", ""),
            from_address=from_address,
            billing_url=get("PM_NOTICE_BILLING_URL", cls.billing_url),
            timeout_seconds=timeout,
            ca_pem=ca_pem,
        )


def _env_str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else raw


@dataclass(frozen=True)
class SmtpServerSettings:
    """Settings of the SmtpServer controller: providers, polling, probes."""

    hostwinds_url: str
    """Hostwinds cloud API endpoint (PM_HOSTWINDS_URL); tests point it at the stand-in."""
    hostwinds_requests_per_second: float
    """Request rate per API key (PM_HOSTWINDS_RPS); Hostwinds tolerates about 2/s."""
    hostwinds_retry_base_seconds: float
    """First retry delay of a transient Hostwinds failure, doubled each time
    (PM_HOSTWINDS_RETRY_BASE_SECONDS)."""
    hostwinds_timeout_seconds: float
    """Timeout of one Hostwinds request (PM_HOSTWINDS_TIMEOUT_SECONDS)."""
    hostwinds_firewall_profile: str
    """Firewall profile opening the SMTP ports, set on every VPS (PM_HOSTWINDS_FIREWALL)."""
    poll_seconds: float
    """How often an SmtpServer is re-checked, e.g. while its VPS is being built
    (PM_SMTP_POLL_SECONDS; Hostwinds practice: 30 s)."""
    probe_seconds: float
    """Minimum time between two health probes of one server; 0 disables probes
    (PM_SMTP_PROBE_SECONDS)."""
    probe_port: int
    """SMTP port probed on provisioned servers (PM_SMTP_PROBE_PORT)."""
    probe_timeout_seconds: float
    """Timeout of each probe step (PM_SMTP_PROBE_TIMEOUT_SECONDS)."""
    dns_resolver: str
    """Resolver for rDNS and blocklist probes, `ip` or `ip:port`; empty: the system's
    (PM_DNS_RESOLVER). Spamhaus refuses public resolvers: use your own."""
    ip_blocklists: tuple[str, ...]
    """DNSBL zones checked for the server's IP (PM_DNSBL_ZONES, comma-separated)."""
    domain_blocklists: tuple[str, ...]
    """Domain blocklists checked for the server's hostname (PM_DOMAIN_BLOCKLISTS)."""
    ssh_port: int
    """SSH port of a new VPS (PM_VPS_SSH_PORT)."""
    mailu_install: bool
    """Install MailU over SSH on a new VPS (PM_MAILU_INSTALL, true/false)."""
    ssh_user: str = "root"
    """User the operator logs in as on a new VPS (PM_VPS_SSH_USER)."""
    mailu_dir: str = "/opt/mailu"
    """Where mailu.env and docker-compose.yml go on the VPS (PM_MAILU_DIR)."""
    mailu_start_command: str = "docker compose pull --quiet && docker compose up -d"
    """Run in PM_MAILU_DIR on the VPS to (re)start MailU (PM_MAILU_START_COMMAND)."""
    mailu_relaynets: tuple[str, ...] = ()
    """Networks (the sender pods' egress) allowed to relay through MailU without AUTH
    (PM_MAILU_RELAYNETS, comma-separated CIDRs)."""
    mailu_api_port: int = 80
    """Port of MailU's web front on the VPS, reached through the SSH connection so the admin
    token never crosses the Internet in clear (PM_MAILU_API_PORT)."""
    intake_host: str = ""
    """The platform's intake (`penguinmails-sender intake`) as MailU's relayed-domain target,
    `host` or `host:port` (PM_INTAKE_HOST): each SendingDomain's return-path domain is relayed
    there, so DSNs and reply copies reach it; empty: mailboxes are made without them."""
    spamhaus_dqs_key: str = field(default="", repr=False)
    """Spamhaus Data Query Service key (PM_SPAMHAUS_DQS_KEY, from a Secret): the *.spamhaus.org
    lists are then queried at <key>.<list>.dq.spamhaus.net, which answers any resolver. Never
    logged, never shown: status and events name the list as <list>.dq.spamhaus.net."""
    hostwinds_create_settle_seconds: float = 1800.0
    """How long a Hostwinds order may stay unlisted before the operator may order again
    (PM_HOSTWINDS_CREATE_SETTLE_SECONDS). Hostwinds practice: poll every 30 s for up to 30 min;
    ordering again sooner can bill two servers."""

    @classmethod
    def from_env(cls) -> SmtpServerSettings:
        return cls(
            hostwinds_url=_env_str(
                "PM_HOSTWINDS_URL", "https://clients.hostwinds.com/cloud/api.php"
            ),
            hostwinds_requests_per_second=_env_float("PM_HOSTWINDS_RPS", 2.0),
            hostwinds_retry_base_seconds=_env_float("PM_HOSTWINDS_RETRY_BASE_SECONDS", 1.0),
            hostwinds_timeout_seconds=_env_float("PM_HOSTWINDS_TIMEOUT_SECONDS", 30.0),
            hostwinds_firewall_profile=_env_str("PM_HOSTWINDS_FIREWALL", "penguinmails-smtp"),
            poll_seconds=_env_float("PM_SMTP_POLL_SECONDS", 30.0),
            probe_seconds=_env_float("PM_SMTP_PROBE_SECONDS", 300.0),
            probe_port=int(_env_float("PM_SMTP_PROBE_PORT", 25)),
            probe_timeout_seconds=_env_float("PM_SMTP_PROBE_TIMEOUT_SECONDS", 10.0),
            dns_resolver=_env_str("PM_DNS_RESOLVER", ""),
            ip_blocklists=tuple(
                z.strip()
                for z in _env_str(
                    "PM_DNSBL_ZONES", "zen.spamhaus.org,bl.spamcop.net,b.barracudacentral.org"
                ).split(",")
                if z.strip()
            ),
            domain_blocklists=tuple(
                z.strip()
                for z in _env_str("PM_DOMAIN_BLOCKLISTS", "dbl.spamhaus.org").split(",")
                if z.strip()
            ),
            ssh_port=int(_env_float("PM_VPS_SSH_PORT", 22)),
            mailu_install=_env_str("PM_MAILU_INSTALL", "true").lower() in ("1", "true", "yes"),
            ssh_user=_env_str("PM_VPS_SSH_USER", "root"),
            mailu_dir=_env_str("PM_MAILU_DIR", "/opt/mailu"),
            mailu_start_command=_env_str(
                "PM_MAILU_START_COMMAND", "docker compose pull --quiet && docker compose up -d"
            ),
            mailu_relaynets=tuple(
                n.strip() for n in _env_str("PM_MAILU_RELAYNETS", "").split(",") if n.strip()
            ),
            mailu_api_port=int(_env_float("PM_MAILU_API_PORT", 80)),
            intake_host=_env_str("PM_INTAKE_HOST", "").strip(),
            spamhaus_dqs_key=_env_str("PM_SPAMHAUS_DQS_KEY", "").strip(),
            hostwinds_create_settle_seconds=_env_float(
                "PM_HOSTWINDS_CREATE_SETTLE_SECONDS", 1800.0
            ),
        )


@dataclass(frozen=True)
class KubeClientSettings:
    """Timeouts of every Kubernetes API call the operator makes (its client and kopf's)."""

    connect_timeout_seconds: float
    """Time to establish a connection to the API server (PM_KUBE_CONNECT_TIMEOUT_SECONDS)."""
    read_timeout_seconds: float
    """Time to wait for the API server's answer (PM_KUBE_READ_TIMEOUT_SECONDS): a hung
    connection fails after it and is retried, instead of holding a worker thread forever."""
    retries: int
    """Retries of a failed or timed-out call, with exponential backoff (PM_KUBE_RETRIES)."""

    @classmethod
    def from_env(cls) -> KubeClientSettings:
        return cls(
            connect_timeout_seconds=_env_float("PM_KUBE_CONNECT_TIMEOUT_SECONDS", 10.0),
            read_timeout_seconds=_env_float("PM_KUBE_READ_TIMEOUT_SECONDS", 30.0),
            retries=int(_env_float("PM_KUBE_RETRIES", 3)),
        )


@dataclass(frozen=True)
class StripeSettings:
    """Billing through Stripe (api/billing/, docs/billing.md). Keys come from a Secret."""

    api_key: str = field(repr=False)
    """Secret API key (PM_STRIPE_API_KEY, sk_live_... / sk_test_...). Never logged or shown."""
    webhook_secret: str = field(repr=False)
    """Signing secret of the webhook endpoint (PM_STRIPE_WEBHOOK_SECRET, whsec_...)."""
    api_base: str
    """Base address of Stripe's API (PM_STRIPE_API_BASE); tests point it at stripe-mock."""
    webhook_tolerance_seconds: int
    """Oldest signature timestamp accepted, against replays (PM_STRIPE_WEBHOOK_TOLERANCE_SECONDS;
    Stripe's default: 300)."""
    grace_seconds: float
    """How long a past_due subscription keeps sending before the tenant is suspended
    (PM_STRIPE_GRACE_SECONDS; 3 days, about Stripe's first retries of the payment)."""
    meter_event_name: str
    """Event name of the Stripe meter that bills overage messages (PM_STRIPE_METER_EVENT)."""
    checkout_success_url: str
    """Where Checkout sends the customer after paying (PM_STRIPE_SUCCESS_URL)."""
    checkout_cancel_url: str
    """Where Checkout sends the customer who gives up (PM_STRIPE_CANCEL_URL)."""
    portal_return_url: str
    """Where the Customer Portal's back link goes (PM_STRIPE_PORTAL_RETURN_URL)."""

    @classmethod
    def configured(cls) -> bool:
        """Whether billing is on (PM_STRIPE_API_KEY set); off, no call to Stripe is made."""
        return bool(_env_str("PM_STRIPE_API_KEY", ""))

    @classmethod
    def from_env(cls, *, webhook: bool = True) -> StripeSettings:
        """`webhook=False` for components that only call Stripe (the operator's usage reports)."""
        api_key = _env_str("PM_STRIPE_API_KEY", "")
        if not api_key.startswith(("sk_", "rk_")):
            raise ValueError(
                "PM_STRIPE_API_KEY is not set to a Stripe secret key: set it to the sk_live_... "
                "(or sk_test_...) key of the Stripe account, from a Secret"
            )
        webhook_secret = _env_str("PM_STRIPE_WEBHOOK_SECRET", "")
        if webhook and not webhook_secret.startswith("whsec_"):
            raise ValueError(
                "PM_STRIPE_WEBHOOK_SECRET is not set to a webhook signing secret: set it to the "
                "whsec_... secret Stripe shows for the endpoint /v1/billing/webhook"
            )
        return cls(
            api_key=api_key,
            webhook_secret=webhook_secret,
            api_base=_env_str("PM_STRIPE_API_BASE", "https://api.stripe.com"),
            webhook_tolerance_seconds=int(_env_float("PM_STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300)),
            grace_seconds=_env_float("PM_STRIPE_GRACE_SECONDS", 3 * 86400.0),
            meter_event_name=_env_str("PM_STRIPE_METER_EVENT", "penguinmails_emails"),
            checkout_success_url=_env_str(
                "PM_STRIPE_SUCCESS_URL", "https://app.penguinmails.io/billing?checkout=success"
            ),
            checkout_cancel_url=_env_str(
                "PM_STRIPE_CANCEL_URL", "https://app.penguinmails.io/billing?checkout=canceled"
            ),
            portal_return_url=_env_str(
                "PM_STRIPE_PORTAL_RETURN_URL", "https://app.penguinmails.io/billing"
            ),
        )


def api_database_url() -> str:
    """DSN of the customer API's own login (PM_API_DATABASE_URL, else PM_DATABASE_URL): a
    member of penguinmails_api, never a superuser."""
    database_url = _env_str("PM_API_DATABASE_URL", "") or _env_str("PM_DATABASE_URL", "")
    if not database_url:
        raise ValueError(
            "PM_API_DATABASE_URL is not set: the DSN of the API's PostgreSQL login (a "
            "member of penguinmails_api), e.g. postgresql://pm_api@127.0.0.1/penguinmails"
        )
    return database_url


@dataclass(frozen=True)
class ApiSettings:
    """The customer HTTP API (api/http/, docs/api.md)."""

    database_url: str
    """DSN of the API's own login (`api_database_url()`)."""
    redis_url: str
    """Redis for sign-in throttling and rate limits (PM_REDIS_URL)."""
    signing_keys: str = field(repr=False)
    """Ed25519 keys signing access tokens, current first, as `<kid>:<seed>,...`
    (PM_API_SIGNING_KEYS; parsed by api/http/tokens.py's SigningKeyRing)."""
    access_token_ttl: timedelta = timedelta(minutes=15)
    """Lifetime of an access token (PM_API_ACCESS_TOKEN_SECONDS)."""
    refresh_token_ttl: timedelta = timedelta(days=30)
    """Lifetime of a refresh token; each use issues a new one (PM_API_REFRESH_TOKEN_DAYS)."""
    sign_in_failures: int = 5
    """Failed sign-ins per address (and per source address, times 4) within the window before
    sign-in answers 429 (PM_API_SIGNIN_FAILURES)."""
    sign_in_window: timedelta = timedelta(minutes=15)
    """Window of the sign-in throttle (PM_API_SIGNIN_WINDOW_SECONDS)."""
    api_key_requests_per_minute: int = 600
    """Requests one API key (or one sign-in, in one tenant) of a starter tenant may make per
    minute before 429; other tiers get a multiple (their `api_rate_factor`)
    (PM_API_KEY_REQUESTS_PER_MINUTE)."""
    source_requests_per_minute: int = 6000
    """Requests one client address (an IPv6 client's /64) may make per minute to /v1 before
    429, signed in or not: the enterprise rate of one key, so that the address limits floods
    and never a lone integration (PM_API_SOURCE_REQUESTS_PER_MINUTE)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDRs of the proxies (the ingress controller) whose `X-Forwarded-For` names
    the client (PM_API_TRUSTED_PROXIES, comma-separated); empty: the connection's peer is the
    client, and no client's header is believed."""
    kubeconfig: str | None = None
    """Kubeconfig outside a cluster (PM_KUBECONFIG); in a pod the ServiceAccount's token."""
    billing_database_url: str = field(default="", repr=False)
    """DSN of a login granted the billing tables, which the API's own login is not
    (PM_BILLING_DATABASE_URL, docs/billing.md); required when billing is on
    (`StripeSettings.configured()`), unused otherwise."""
    dashboard: Path | None = None
    """The built dashboard served at / (`dashboard_dir()`); None: API only."""
    relay: NoticeSettings = field(default_factory=lambda: NoticeSettings.from_env({}))
    """The platform's relay (PM_NOTICE_SMTP_*, as the operator's usage notices) with the
    invitations' From (PM_API_INVITATION_FROM); no host: invitations are not e-mailed."""
    invitation_url: str = "https://app.penguinmails.io/accept-invitation"
    """The page an invitation e-mail links to, the token after `#token=`
    (PM_API_INVITATION_URL)."""
    mail_retry_seconds: float = 60.0
    """How often owed invitation e-mails are tried again (PM_API_MAIL_RETRY_SECONDS)."""

    @classmethod
    def from_env(cls) -> ApiSettings:
        redis_url = _env_str("PM_REDIS_URL", "")
        if not redis_url:
            raise ValueError("PM_REDIS_URL is not set: e.g. redis://127.0.0.1:6379/0")
        billing_database_url = _env_str("PM_BILLING_DATABASE_URL", "")
        if StripeSettings.configured() and not billing_database_url:
            raise ValueError(
                "PM_BILLING_DATABASE_URL is not set: billing (PM_STRIPE_API_KEY is set) needs the "
                "DSN of a login granted the billing tables (docs/billing.md)"
            )
        return cls(
            database_url=api_database_url(),
            redis_url=redis_url,
            signing_keys=_env_str("PM_API_SIGNING_KEYS", ""),
            access_token_ttl=timedelta(seconds=_env_float("PM_API_ACCESS_TOKEN_SECONDS", 900)),
            refresh_token_ttl=timedelta(days=_env_float("PM_API_REFRESH_TOKEN_DAYS", 30)),
            sign_in_failures=int(_env_float("PM_API_SIGNIN_FAILURES", 5)),
            sign_in_window=timedelta(seconds=_env_float("PM_API_SIGNIN_WINDOW_SECONDS", 900)),
            api_key_requests_per_minute=int(_env_float("PM_API_KEY_REQUESTS_PER_MINUTE", 600)),
            source_requests_per_minute=int(_env_float("PM_API_SOURCE_REQUESTS_PER_MINUTE", 6000)),
            trusted_proxies=_networks("PM_API_TRUSTED_PROXIES"),
            kubeconfig=_env_str("PM_KUBECONFIG", "") or None,
            billing_database_url=billing_database_url,
            dashboard=dashboard_dir(),
            relay=replace(
                NoticeSettings.from_env(),
                from_address=_env_str("PM_API_INVITATION_FROM", INVITATION_FROM),
            ),
            invitation_url=_env_str("PM_API_INVITATION_URL", cls.invitation_url),
            mail_retry_seconds=_env_float("PM_API_MAIL_RETRY_SECONDS", 60.0),
        )


def _networks(name: str) -> tuple[str, ...]:
    """A comma-separated list of addresses or CIDRs; ValueError naming the variable and the
    entry that is neither."""
    found: list[str] = []
    for entry in _env_str(name, "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            found.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ValueError(
                f"{name}: {entry!r} is not an IP address or CIDR: list the proxies' addresses "
                "or networks, comma-separated (e.g. 10.0.0.0/8,192.0.2.7)"
            ) from None
    return tuple(found)


# In a checkout, `make` builds the dashboard into web/dist (common/settings.py -> repo root).
_CHECKOUT_DASHBOARD = Path(__file__).resolve().parents[1] / "web" / "dist"


def dashboard_dir() -> Path | None:
    """The built dashboard (PM_DASHBOARD_DIR; in a checkout web/dist once built), or None:
    the API then serves no pages, only /v1."""
    given = os.environ.get("PM_DASHBOARD_DIR", "")
    if given:
        path = Path(given)
        if not (path / "index.html").is_file():
            raise ValueError(
                f"PM_DASHBOARD_DIR={given!r} has no index.html: point it at the dashboard's "
                "build (web/dist after `make web`), or unset it to serve the API only"
            )
        return path
    return _CHECKOUT_DASHBOARD if (_CHECKOUT_DASHBOARD / "index.html").is_file() else None
