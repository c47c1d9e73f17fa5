"""Run the operator: `python -m penguinmails.operator` or `penguinmails-operator`.

The cluster comes from in-cluster credentials, else PM_KUBECONFIG / KUBECONFIG; the database
from PM_DATABASE_URL. Migrations run at start (serialized by an advisory lock), so a new
operator version brings its schema with it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import kopf
from prometheus_client import start_http_server

from penguinmails.common.db.migrate import migrate
from penguinmails.common.settings import KubeClientSettings, OperatorSettings
from penguinmails.operator import (
    bookkeeping,
    campaign,
    sendingdomain,
    smtpserver,
    tenant,
)
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.context import Context
from penguinmails.operator.kube import KUBE_WORKERS, Kube, connection_info, load_config
from penguinmails.operator.leader import LeaderElector, LeaseSettings, StandbyLiveness
from penguinmails.operator.retention import purge_periodically

ANNOTATION_PREFIX = "penguinmails.io"
DELETION_POLL_SECONDS = 1.0
"""How often a deleted object's timer is checked for having stopped (see `configure`)."""


def build_registry(config: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kube_settings = KubeClientSettings.from_env()

    @kopf.on.startup(registry=registry)
    async def configure(
        settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        # Idle watch streams can stall silently (kopf #204, #585): have the server close them
        # and the client give up a little later, so every watch is re-established regularly.
        settings.watching.server_timeout = 270
        settings.watching.client_timeout = 300
        settings.watching.connect_timeout = 30
        # kopf lists every object of a kind in one response (at start, and again whenever a
        # watch's resource version is too old). Not in pages (`settings.watching.chunk_size`):
        # kopf reads the next page only once the previous one's events are queued, and when
        # that takes longer than the API server keeps a continue token (5 minutes, a loaded
        # operator with thousands of objects), the 410 ends the whole operator
        # (docs/scaling.md, Memory).
        # kopf's own calls get the same connect timeout as the operator's client; their total
        # timeout stays at least 60 s, because kopf lists every object of a kind at start
        # (10,000 Tenants are one large response).
        settings.networking.connect_timeout = kube_settings.connect_timeout_seconds
        settings.networking.request_timeout = max(60.0, kube_settings.read_timeout_seconds)
        settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/cleanup"
        # Our status schema is strict: keep kopf's bookkeeping in annotations, not in status,
        # under a prefix of its own (kopf hides its prefix from change detection) and small.
        settings.persistence.progress_storage = bookkeeping.progress_storage()
        settings.persistence.diffbase_storage = bookkeeping.DigestDiffBaseStorage()
        settings.execution.max_workers = 32
        # A deleted object keeps its finalizer until its timer has stopped. A timer stopped
        # mid-pass is re-checked only after this poll (kopf: 60 s), unless some other change
        # of the object comes first; a pass that ends writing nothing leaves none, and its
        # deletion then waited a whole minute (CI-7). A pass ends within seconds: poll each.
        settings.background.cancellation_polling = DELETION_POLL_SECONDS
        # asyncio.to_thread (every Kubernetes call) uses the loop's default executor.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=KUBE_WORKERS, thread_name_prefix="kube")
        )
        asyncio.get_running_loop().set_exception_handler(_quiet_watch_close)

        applied = await migrate(config.database_url)
        if applied:
            logger.info("database migrations applied: %s", ", ".join(applied))
        db = await asyncpg.create_pool(config.database_url, min_size=1, max_size=10)
        # API discovery happens in the constructor: off the event loop too.
        kube = await asyncio.to_thread(lambda: Kube(load_config(kube_settings)))
        for priority_class in res.priority_classes():
            await kube.apply(priority_class)
        memo.context = Context(settings=config, kube=kube, db=db)
        memo.purge_task = asyncio.create_task(
            purge_periodically(db, config.purge_interval_seconds, config.billing_event_retention)
        )
        if config.metrics_port:
            start_http_server(config.metrics_port, addr="0.0.0.0")  # noqa: S104

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # A registry of our own starts empty, without kopf's default login; ours also honours
        # PM_KUBECONFIG, which the kubernetes client's default loading would not.
        return connection_info()

    @kopf.on.cleanup(registry=registry)
    async def stop_background(memo: kopf.Memo, **_: Any) -> None:
        purge_task = getattr(memo, "purge_task", None)
        if purge_task is not None:
            purge_task.cancel()
        # The database pool is left open on purpose: kopf abandons timers that are mid-reconcile
        # at exit, and closing the pool under them would turn their last writes into errors.
        # The process exits right after, which closes the connections.

    tenant.register(registry, config)
    smtpserver.register(registry, config)
    sendingdomain.register(registry, config)
    campaign.register(registry, config)
    return registry


def _quiet_watch_close(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """At exit, asyncio closes the watch generators kopf left suspended inside its streaming
    context, and each one reports "generator didn't stop after athrow()" with a traceback (the
    more kinds watched, the more often). Nothing is lost there (the process is stopping and
    kopf has finished its handlers): say it in one line; report everything else as asyncio
    would."""
    generator = context.get("asyncgen")
    if getattr(generator, "__name__", "") == "infinite_watch" and isinstance(
        context.get("exception"), RuntimeError
    ):
        logging.getLogger(__name__).info("a watch stream was closed at exit")
        return
    loop.default_exception_handler(context)


def _lean_spawned_workers() -> None:
    """Spawned worker processes (the DKIM key processes, common/dkim/keygen.py) first run the
    parent's main script again, unless the parent was started as a module: started as the
    `penguinmails-operator` console script (the image's entrypoint), each would import the
    whole operator (110 MiB instead of 22). A main module named like this one (`*.__main__`)
    is skipped, as under `python -m penguinmails.operator`: name the script so."""
    script = sys.modules["__main__"]
    if getattr(script, "__spec__", None) is None:
        script.__spec__ = importlib.util.find_spec(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="penguinmails-operator", description=__doc__)
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8081/healthz", help="kopf liveness endpoint URL"
    )
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not args.verbose:
        # httpx logs each request at INFO: every reopened child watch (each kind, every few
        # minutes) and every DNS provider call. Its warnings and our own errors still show.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    _lean_spawned_workers()
    registry = build_registry(OperatorSettings.from_env())
    liveness = args.liveness or None
    # With PM_LEADER_LEASE set (the chart sets it), replicas elect one leader on a Lease and
    # only the leader runs kopf; kopf itself stays standalone (no peering objects).
    lease = LeaseSettings.from_env()
    elector = LeaderElector(lease) if lease else None
    if elector is not None:
        standby = StandbyLiveness(liveness)
        try:
            elector.acquire()
        finally:
            standby.stop()
        elector.keep_renewing()
    try:
        kopf.run(
            registry=registry,
            clusterwide=True,
            standalone=True,
            liveness_endpoint=liveness,
        )
    finally:
        if elector is not None:
            elector.release()


if __name__ == "__main__":
    main()
