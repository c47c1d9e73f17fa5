"""The unsubscribe endpoint (RFC 8058 one-click), outside `/v1` and without authentication:
the link in every message's List-Unsubscribe header is the credential.

    GET  /u/<token>   a confirmation page with one button (mail scanners that follow links
                      must not unsubscribe anybody, so GET changes nothing)
    POST /u/<token>   unsubscribes at once: a mail client's One-Click POST (body
                      `List-Unsubscribe=One-Click`, form-urlencoded or multipart) or the page's
                      button

Tokens (common.suppression.make_token) name a delivery, never an address, and hide its tenant;
they are checked with the platform's key ring (common.keys), so tokens of a retired key id
still work while that id stays in the ring; an invalid token gets the same neutral page as an
unknown one. Repeating a POST is harmless.

The API serves it when its key ring (PM_SUPPRESSION_KEY) is set, and `penguinmails unsubscribe
serve` (api/unsubscribe.py) serves it alone, in the chart's unsubscribe Deployment. Either app
sets `app.state.unsubscribing`.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.types import Message

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

__all__ = ["MAX_BODY_BYTES", "Unsubscribing", "router", "unsubscribe"]

MAX_BODY_BYTES = 64 * 1024
"""A one-click body is 26 bytes; anything much larger is refused before it is parsed."""

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Unsubscribing:
    """What the endpoint needs: a pool whose login may write deliveries and suppressions
    (penguinmails_app), and the key ring that checks tokens."""

    pool: asyncpg.Pool
    keys: MasterKeys


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head>
<body style="font-family:sans-serif;max-width:32em;margin:4em auto">
<h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _not_found() -> HTMLResponse:
    return _page(
        "Link not valid",
        "<p>This unsubscribe link is not valid. If you copied it, check that it is complete.</p>",
        404,
    )


def _unsubscribing(request: Request) -> Unsubscribing | None:
    found = getattr(request.app.state, "unsubscribing", None)
    return found if isinstance(found, Unsubscribing) else None


Service = Annotated[Unsubscribing | None, Depends(_unsubscribing)]


def _unavailable() -> HTMLResponse:
    # The API without PM_SUPPRESSION_KEY: it cannot check tokens (as GDPR answers 503 there).
    return _page("Unavailable", "<p>Unsubscribing is not available here.</p>", 503)


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


@router.get("/u/{token}", response_class=HTMLResponse)
async def confirm(token: str, service: Service) -> HTMLResponse:
    if service is None:
        return _unavailable()
    if read_token(service.keys, TokenPurpose.UNSUBSCRIBE, token) is None:
        return _not_found()
    return _page(
        "Unsubscribe",
        '<p>Stop receiving these messages?</p><form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def _one_click(request: Request) -> bool | None:
    """Whether the body says `List-Unsubscribe=One-Click`; None when it is too large."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    # Starlette parses both encodings RFC 8058 allows (urlencoded and multipart/form-data).
    try:
        async with Request(request.scope, replay).form(max_files=0, max_fields=16) as form:
            return form.get("List-Unsubscribe") == "One-Click"
    except HTTPException:  # a malformed multipart body: not a one-click request either
        return False


@router.post("/u/{token}", response_class=HTMLResponse)
async def one_click(token: str, request: Request, service: Service) -> HTMLResponse:
    if service is None:
        return _unavailable()
    found = read_token(service.keys, TokenPurpose.UNSUBSCRIBE, token)
    if found is None:
        return _not_found()
    one_click = await _one_click(request)
    if one_click is None:
        return _page("Unsubscribe", "<p>The request is too large.</p>", 413)
    if not one_click:
        return _page(
            "Unsubscribe",
            "<p>Send <code>List-Unsubscribe=One-Click</code> to unsubscribe.</p>",
            400,
        )
    tenant_id, delivery_id = found
    if not await unsubscribe(service.pool, tenant_id, delivery_id):
        return _not_found()
    return _page("Unsubscribed", "<p>You will not receive these messages any more.</p>")
