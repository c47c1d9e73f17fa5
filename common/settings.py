"""Settings read from the environment, shared by every component.

Each setting is a `PM_*` variable; the defaults suit the local stack started by `make run`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from penguinmails.common.db.tenants import TENANT_DATA_RETENTION


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
    resync_seconds: float
    """How often a timer re-checks each object for drift (PM_RESYNC_SECONDS)."""
    tenant_data_retention: timedelta
    """How long a deleted tenant's rows are kept before the purge (PM_TENANT_RETENTION_DAYS)."""
    metrics_port: int
    """Port of the Prometheus /metrics endpoint; 0 disables it (PM_METRICS_PORT)."""
    purge_interval_seconds: float
    """How often deleted tenants past their retention are purged (PM_PURGE_INTERVAL_SECONDS)."""

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
            sender_image=os.environ.get(
                "PM_SENDER_IMAGE", "ghcr.io/penguinmails/penguinmails:0.1.0"
            ),
            resync_seconds=_env_float("PM_RESYNC_SECONDS", 60.0),
            tenant_data_retention=timedelta(
                days=_env_float("PM_TENANT_RETENTION_DAYS", TENANT_DATA_RETENTION.days)
            ),
            metrics_port=int(_env_float("PM_METRICS_PORT", 8080)),
            purge_interval_seconds=_env_float("PM_PURGE_INTERVAL_SECONDS", 3600.0),
        )
