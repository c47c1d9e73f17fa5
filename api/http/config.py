"""The API's settings, each a `PM_*` environment variable (defaults suit `make run`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .tokens import SigningKeyRing

__all__ = ["ApiSettings", "dashboard_dir"]

# In a checkout, `make` builds the dashboard into web/dist (api/http/config.py -> repo root).
_CHECKOUT_DASHBOARD = Path(__file__).resolve().parents[2] / "web" / "dist"


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


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise ValueError(f"{name}={raw!r} is not a number: e.g. {default}") from error


@dataclass(frozen=True)
class ApiSettings:
    database_url: str
    """DSN of the API's own login (PM_API_DATABASE_URL, else PM_DATABASE_URL): a member of
    penguinmails_api, never a superuser."""
    redis_url: str
    """Redis for sign-in throttling (PM_REDIS_URL)."""
    signing_keys: SigningKeyRing = field(repr=False)
    """Ed25519 keys signing access tokens, current first (PM_API_SIGNING_KEYS)."""
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
    """Requests one API key may make per minute before 429 (PM_API_KEY_REQUESTS_PER_MINUTE)."""
    kubeconfig: str | None = None
    """Kubeconfig outside a cluster (PM_KUBECONFIG); in a pod the ServiceAccount's token."""
    dashboard: Path | None = None
    """The built dashboard served at / (`dashboard_dir()`); None: API only."""

    @classmethod
    def from_env(cls) -> ApiSettings:
        database_url = os.environ.get("PM_API_DATABASE_URL") or os.environ.get(
            "PM_DATABASE_URL", ""
        )
        if not database_url:
            raise ValueError(
                "PM_API_DATABASE_URL is not set: the DSN of the API's PostgreSQL login (a "
                "member of penguinmails_api), e.g. postgresql://pm_api@127.0.0.1/penguinmails"
            )
        redis_url = os.environ.get("PM_REDIS_URL", "")
        if not redis_url:
            raise ValueError("PM_REDIS_URL is not set: e.g. redis://127.0.0.1:6379/0")
        return cls(
            database_url=database_url,
            redis_url=redis_url,
            signing_keys=SigningKeyRing.from_env(),
            access_token_ttl=timedelta(seconds=_float("PM_API_ACCESS_TOKEN_SECONDS", 900)),
            refresh_token_ttl=timedelta(days=_float("PM_API_REFRESH_TOKEN_DAYS", 30)),
            sign_in_failures=int(_float("PM_API_SIGNIN_FAILURES", 5)),
            sign_in_window=timedelta(seconds=_float("PM_API_SIGNIN_WINDOW_SECONDS", 900)),
            api_key_requests_per_minute=int(_float("PM_API_KEY_REQUESTS_PER_MINUTE", 600)),
            kubeconfig=os.environ.get("PM_KUBECONFIG") or None,
            dashboard=dashboard_dir(),
        )
