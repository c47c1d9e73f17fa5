"""Run the sender: `penguinmails-sender` (the program of a tenant's sender pods).

Environment: PM_TENANT (tenant name), PM_DATABASE_URL, PM_TOKEN_KEY, optional PM_REDIS_URL
(throttles shared by all pods; unset: no throttles), PM_SECRETS_DIR (read Secrets from files;
unset: from the API, namespace tenant-<name>), PM_SENDER_CONCURRENCY, PM_LEASE_SECONDS,
PM_RETRY_BASE_SECONDS / PM_RETRY_MAX_SECONDS / PM_RETRY_LIFETIME_SECONDS (4xx schedule: 300,
14400, 432000), PM_UNCERTAIN_RETRY_SECONDS (3600), PM_MAX_EXPIRED_CLAIMS (5),
PM_PROVIDER_RATE (messages/s per destination provider), PM_SIGNING_PROCESSES (processes making
the DKIM signatures beside the event loop; default: the usable CPUs less one, 0: on the loop),
PM_MX_LOOKUP (1: group destinations by MX), PM_METRICS_PORT (0: off), PM_EGRESS_ALLOW and
PM_CLUSTER_CIDRS (the platform's egress policy, checked at every relay connection; set by the
operator on the Deployment), PM_DNS_RESOLVER (ip[:port] resolving relay names for that check;
unset: the system's).

SIGTERM or SIGINT: stop claiming, finish what is in flight, record it, exit 0.

`penguinmails-sender intake [--port 2525]` serves the bounce/complaint intake over SMTP instead
(the return-path domain's MX): needs PM_DATABASE_URL and PM_SUPPRESSION_KEY; optional
PM_COMPLAINT_ADDRESS (feedback-loop addresses it also accepts) and PM_INTAKE_MAX_BYTES (10 MiB).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import uvloop
from prometheus_client import start_http_server
from redis.asyncio import Redis

from penguinmails.common.cpus import usable_cpus
from penguinmails.common.db.tenant_logins import SENDER_POOL_SIZE
from penguinmails.common.db.tenants import get_tenant
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.keys import MasterKeys, TokenKey
from penguinmails.common.resolver import make_resolver
from penguinmails.sender.engine import Sender, SenderConfig
from penguinmails.sender.retry import RetrySchedule
from penguinmails.sender.secrets import DirSecrets, KubeSecrets, SecretReader

log = logging.getLogger("penguinmails.sender")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


def retry_schedule() -> RetrySchedule:
    try:
        return RetrySchedule(
            base=_env_number("PM_RETRY_BASE_SECONDS", 300),
            maximum=_env_number("PM_RETRY_MAX_SECONDS", 14400),
            lifetime=_env_number("PM_RETRY_LIFETIME_SECONDS", 432000),
        )
    except ValueError as error:
        raise SystemExit(str(error)) from None


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing. The sender changes no session state (every
    setting is `SET LOCAL` in `tenant_scope()`'s transaction; no LISTEN, advisory lock or
    cursor outlives one), so asyncpg's default reset (RESET ALL, UNLISTEN *, CLOSE ALL...)
    would be a round trip per acquire for nothing. An open transaction is still rolled back
    by asyncpg before this is called."""


async def run() -> int:
    tenant_name = os.environ.get("PM_TENANT", "")
    dsn = os.environ.get("PM_DATABASE_URL", "")
    if not tenant_name or not dsn:
        log.error("PM_TENANT and PM_DATABASE_URL must be set")
        return 1
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=SENDER_POOL_SIZE, reset=keep_session)
    tenant = await get_tenant(pool, tenant_name)
    if tenant is None or tenant.deleted:
        log.error("no tenant %s in the database", tenant_name)
        return 1
    secrets_dir = os.environ.get("PM_SECRETS_DIR")
    secrets: SecretReader = (
        DirSecrets(Path(secrets_dir)) if secrets_dir else KubeSecrets(tenant.namespace)
    )
    redis_url = os.environ.get("PM_REDIS_URL")
    redis = Redis.from_url(redis_url) if redis_url else None
    config = SenderConfig(
        tenant_id=tenant.id,
        token_key=TokenKey.from_env(),
        concurrency=int(_env_number("PM_SENDER_CONCURRENCY", 32)),
        lease=timedelta(seconds=_env_number("PM_LEASE_SECONDS", 120)),
        retry=retry_schedule(),
        uncertain_retry=_env_number("PM_UNCERTAIN_RETRY_SECONDS", 3600),
        max_expired_claims=int(_env_number("PM_MAX_EXPIRED_CLAIMS", 5)),
        poll_interval=_env_number("PM_POLL_SECONDS", 0.5),
        provider_rate=_env_number("PM_PROVIDER_RATE", 100.0),
        signing_processes=int(_env_number("PM_SIGNING_PROCESSES", usable_cpus() - 1)),
    )
    sender = Sender(
        pool,
        config,
        secrets=secrets,
        redis=redis,
        mx_lookup=os.environ.get("PM_MX_LOOKUP") == "1",
        # The platform's deny list (PM_EGRESS_ALLOW, PM_CLUSTER_CIDRS, set on the sender's
        # Deployment by the operator), checked at every relay connection (DNS rebinding).
        egress=EgressPolicy.from_env(),
        resolver=make_resolver(resolver)
        if (resolver := os.environ.get("PM_DNS_RESOLVER"))
        else None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("sender %s started for tenant %s", config.owner, tenant_name)
    try:
        await sender.run(stop)
    finally:
        await pool.close()
        if redis is not None:
            await redis.aclose()
    log.info("sender %s stopped after %d messages", config.owner, sender.sent)
    return 0


def intake(argv: list[str]) -> int:
    import argparse
    import threading

    from penguinmails.sender.intake import IntakeHandler, intake_server

    parser = argparse.ArgumentParser(prog="penguinmails-sender intake")
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104
    parser.add_argument("--port", type=int, default=2525)
    args = parser.parse_args(argv)
    dsn = os.environ.get("PM_DATABASE_URL", "")
    if not dsn:
        log.error("PM_DATABASE_URL must be set")
        return 1
    try:
        controller = intake_server(IntakeHandler(dsn, MasterKeys.from_env()), args.host, args.port)
    except ValueError as error:
        log.error("%s", error)
        return 1
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("bounce intake on %s:%d", args.host, args.port)
    stop.wait()
    controller.stop()
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if sys.argv[1:2] == ["intake"]:
        sys.exit(intake(sys.argv[2:]))
    port = int(_env_number("PM_METRICS_PORT", 9090))
    if port:
        start_http_server(port, addr="0.0.0.0")  # noqa: S104
    # libuv's event loop: the sender's work per message is mostly event-loop work besides
    # the signatures (SMTP, PostgreSQL and Redis round trips), 10-15 % less CPU on uvloop.
    sys.exit(uvloop.run(run()))


if __name__ == "__main__":
    main()
