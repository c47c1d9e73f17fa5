"""The unsubscribe endpoint (RFC 8058 one-click), servable on its own.

    GET  /u/<token>   a confirmation page with one button (mail scanners that follow links
                      must not unsubscribe anybody, so GET changes nothing)
    POST /u/<token>   unsubscribes at once: a mail client's One-Click POST (body
                      `List-Unsubscribe=One-Click`) or the page's button
    GET  /healthz     liveness

Tokens (common.suppression.make_token) name a delivery, never an address, and hide its tenant;
they are checked with the platform's key ring (common.keys), so tokens of a retired key id
still work while that id stays in the ring;
an invalid token gets the same neutral page as an unknown one. Repeating a POST is harmless.
"""

from __future__ import annotations

import html
import logging
import uuid

import asyncpg
from aiohttp import web

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.ledger import mark_unsubscribed
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import (
    SuppressionReason,
    TokenPurpose,
    read_token,
    suppress,
)
from penguinmails.common.webhook_events import delivery_event, unsubscribed_before
from penguinmails.common.webhooks import EventType

__all__ = ["make_app", "serve", "unsubscribe"]

log = logging.getLogger(__name__)

_POOL = web.AppKey("pool", asyncpg.Pool)
_KEYS = web.AppKey("keys", MasterKeys)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head>
<body style="font-family:sans-serif;max-width:32em;margin:4em auto">
<h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=html.escape(title), body=body),
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


async def unsubscribe(pool: asyncpg.Pool, tenant_id: uuid.UUID, delivery_id: int) -> bool:
    """Suppress the delivery's address for its tenant; False when there is no such delivery."""
    async with tenant_connection(pool, tenant_id) as conn:
        repeated = await unsubscribed_before(conn, delivery_id)
        hashed = await mark_unsubscribed(conn, delivery_id)
        if hashed is None:
            return False
        await suppress(conn, hashed, SuppressionReason.UNSUBSCRIBED, "one-click")
        if not repeated:
            await delivery_event(conn, EventType.UNSUBSCRIBED, delivery_id)
    return True


def _not_found() -> web.Response:
    return _page(
        "Link not valid",
        "<p>This unsubscribe link is not valid. If you copied it, check that it is complete.</p>",
        404,
    )


async def _confirm(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    if read_token(request.app[_KEYS], TokenPurpose.UNSUBSCRIBE, token) is None:
        return _not_found()
    return _page(
        "Unsubscribe",
        '<p>Stop receiving these messages?</p><form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def _post(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    found = read_token(request.app[_KEYS], TokenPurpose.UNSUBSCRIBE, token)
    if found is None:
        return _not_found()
    # RFC 8058: the body is List-Unsubscribe=One-Click; a form post from our page sends the same.
    form = await request.post()
    if form.get("List-Unsubscribe") != "One-Click":
        return _page(
            "Unsubscribe",
            "<p>Send <code>List-Unsubscribe=One-Click</code> to unsubscribe.</p>",
            400,
        )
    tenant_id, delivery_id = found
    if not await unsubscribe(request.app[_POOL], tenant_id, delivery_id):
        return _not_found()
    return _page("Unsubscribed", "<p>You will not receive these messages any more.</p>")


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(pool: asyncpg.Pool, keys: MasterKeys) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[_POOL] = pool
    app[_KEYS] = keys
    app.router.add_get("/u/{token}", _confirm)
    app.router.add_post("/u/{token}", _post)
    app.router.add_get("/healthz", _healthz)
    return app


async def serve(dsn: str, *, host: str = "0.0.0.0", port: int = 8088) -> None:  # noqa: S104
    """Serve until SIGTERM or SIGINT, then finish open requests and close the pool.

    The handler is explicit because as PID 1 in a container the process gets no default
    SIGTERM action: without it the pod would only die when its grace period runs out.
    """
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
    runner = web.AppRunner(make_app(pool, MasterKeys.from_env()))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("unsubscribe endpoint on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await pool.close()
