"""The unsubscribe endpoint served alone: `penguinmails unsubscribe serve`, the chart's
unsubscribe Deployment.

The same FastAPI router as the customer API's (api/http/routes/unsubscribe.py: `/u/<token>`,
RFC 8058 one-click), in an app with nothing else beside `GET /healthz`: no Kubernetes access, no
Redis, no account or token keys, only PostgreSQL and the platform's key ring (PM_SUPPRESSION_KEY).
"""

from __future__ import annotations

import logging
import signal

import asyncpg
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from penguinmails.common.keys import MasterKeys

from .http.routes.unsubscribe import Unsubscribing, router

__all__ = ["make_app", "serve"]

log = logging.getLogger(__name__)


def make_app(pool: asyncpg.Pool, keys: MasterKeys) -> FastAPI:
    """The endpoint on an open `pool` (its login a member of penguinmails_app)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.unsubscribing = Unsubscribing(pool, keys)
    app.include_router(router)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        """Liveness and readiness: the listener is up (the pool opened before it started)."""
        return "ok"

    return app


async def serve(dsn: str, *, host: str = "0.0.0.0", port: int = 8088) -> None:  # noqa: S104
    """Serve until SIGTERM or SIGINT, then finish open requests and close the pool."""
    keys = MasterKeys.from_env()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
    # uvicorn handles SIGTERM/SIGINT while it serves (a graceful shutdown), then restores the
    # handlers it found and raises the signal again. Handlers that do nothing make that second
    # delivery a no-op, so a stopped pod exits 0 after closing its pool (as PID 1 in a container
    # there is no default action to rely on either way).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    config = uvicorn.Config(
        make_app(pool, keys),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=True,
        server_header=False,
        lifespan="off",
    )
    log.info("unsubscribe endpoint on %s:%d", host, port)
    try:
        await uvicorn.Server(config).serve()
    finally:
        await pool.close()
