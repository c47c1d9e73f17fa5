"""The MailU configuration of an SmtpServer: ``mailu.env`` and the compose file.

Pure functions of the spec and the generated secrets, so the same spec always renders the same
files (the installer compares before restarting anything). Images are pinned to the release in
``MAILU_VERSION``: an upgrade is a deliberate change, never a surprise on the next pull.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec

MAILU_VERSION = "2024.06"
REGISTRY = "ghcr.io/mailu"
SUBNET = "192.168.203.0/24"
MESSAGE_SIZE_LIMIT = 50_000_000
COMPONENTS = ("front", "admin", "smtp", "imap", "antispam", "redis", "resolver")
_IMAGES = {
    "front": "nginx",
    "admin": "admin",
    "smtp": "postfix",
    "imap": "dovecot",
    "antispam": "rspamd",
    "resolver": "unbound",
}
_SAFE_VALUE = re.compile(r"^[^\n\r\0]*$")


@dataclass(frozen=True)
class MailuSecrets:
    """Generated once per SmtpServer and kept in its Secret."""

    secret_key: str
    api_token: str
    relay_password: str = ""
    ssh_host_key: str = ""
    """The VPS's SSH host key, pinned on the first connection (public: not a secret)."""

    def __repr__(self) -> str:
        return "MailuSecrets(<redacted>)"


def domain_of(hostname: str) -> str:
    """The mail domain MailU serves: the hostname without its first label."""
    labels = hostname.split(".")
    return ".".join(labels[1:]) if len(labels) > 2 else hostname


def image(component: str, version: str = MAILU_VERSION) -> str:
    """The pinned image of a MailU component (redis is the upstream image MailU documents)."""
    if component == "redis":
        return "redis:7.2-alpine"
    return f"{REGISTRY}/{_IMAGES[component]}:{version}"


def env_values(
    spec: SmtpServerSpec,
    secrets: MailuSecrets,
    *,
    relaynets: Sequence[str],
    tls_flavor: str = "letsencrypt",
) -> dict[str, str]:
    """mailu.env as a mapping (the in-cluster manifests use it as a ConfigMap + Secret)."""
    values = {
        "SECRET_KEY": secrets.secret_key,
        "DOMAIN": domain_of(spec.hostname),
        "HOSTNAMES": spec.hostname,
        "POSTMASTER": "postmaster",
        "SUBNET": SUBNET,
        "TLS_FLAVOR": tls_flavor,
        "MESSAGE_SIZE_LIMIT": str(MESSAGE_SIZE_LIMIT),
        # Sender pods reach MailU from these networks and may relay through it without AUTH;
        # nobody else may (an open relay is blocklisted within hours).
        "RELAYNETS": ",".join(relaynets),
        "API": "true",
        "WEB_API": "/api",
        "API_TOKEN": secrets.api_token,
        "WEBMAIL": "none",
        "ANTIVIRUS": "none",
        "DISABLE_STATISTICS": "true",
        "LOG_LEVEL": "WARNING",
    }
    if spec.max_per_hour is not None:
        values["MESSAGE_RATELIMIT"] = f"{spec.max_per_hour}/hour"
    for key, value in values.items():
        if not _SAFE_VALUE.match(value):
            raise ValueError(f"{key} must be one line")
    return values


def render_env(values: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def render_compose(version: str = MAILU_VERSION, *, bind_address: str = "0.0.0.0") -> str:  # noqa: S104
    """docker-compose.yml: MailU's documented layout, pinned images, no webmail/antivirus."""

    def service(component: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "image": image(component, version),
            "restart": "always",
            "env_file": "mailu.env",
            "logging": {"driver": "journald"},
        }
        body.update(extra)
        return body

    ports = [f"{bind_address}:{port}:{port}" for port in (25, 465, 587, 80, 443)]
    services = {
        "redis": {
            "image": image("redis"),
            "restart": "always",
            "volumes": ["/mailu/redis:/data"],
        },
        "front": service("front", ports=ports, volumes=["/mailu/certs:/certs"]),
        "resolver": service("resolver", networks={"default": {"ipv4_address": "192.168.203.254"}}),
        "admin": service("admin", volumes=["/mailu/data:/data", "/mailu/dkim:/dkim"]),
        "imap": service("imap", volumes=["/mailu/mail:/mail"]),
        "smtp": service("smtp", volumes=["/mailu/mailqueue:/queue"]),
        "antispam": service("antispam", volumes=["/mailu/filter:/var/lib/rspamd"]),
    }
    for name in ("front", "admin", "imap", "smtp", "antispam"):
        services[name]["depends_on"] = ["resolver"]
        services[name]["dns"] = ["192.168.203.254"]
    document = {
        "services": services,
        "networks": {
            "default": {
                "driver": "bridge",
                "ipam": {"driver": "default", "config": [{"subnet": SUBNET}]},
            }
        },
    }
    return str(yaml.safe_dump(document, sort_keys=True))
