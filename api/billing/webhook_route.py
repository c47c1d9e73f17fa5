"""POST /v1/billing/webhook: Stripe's deliveries, as a FastAPI router.

    app.include_router(webhook_router(Billing(pool, TenantWriter(api_client), settings)))

The raw body is what the signature covers, so it is read as bytes before anything parses it.
Answers: 200 with the verdict (applied, duplicate, stale, ignored) once the event is recorded;
400 for a refused signature or a body that is no event (Stripe shows it on the endpoint, and a
forged delivery learns nothing more); 500 when the Tenant could not be changed, so that Stripe
delivers the event again later.

The router's lifespan runs `expire_grace` periodically: a past_due tenant is suspended when its
grace period ends even if Stripe sends nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from penguinmails.api.billing.tenants import TenantWriter
from penguinmails.api.billing.webhook import WebhookRejectedError, expire_grace, process, verify
from penguinmails.common.settings import StripeSettings

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/v1/billing/webhook"
GRACE_SWEEP_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Billing:
    """What the webhook needs: the platform database, the Tenant writer, the settings."""

    pool: asyncpg.Pool
    tenants: TenantWriter
    settings: StripeSettings

    @property
    def sweep_seconds(self) -> float:
        """How often grace periods are checked: a quarter of the grace period, at most 60 s."""
        return max(0.5, min(GRACE_SWEEP_MAX_SECONDS, self.settings.grace_seconds / 4))


async def _sweep(billing: Billing) -> None:
    while True:
        await asyncio.sleep(billing.sweep_seconds)
        try:
            for done in await expire_grace(billing.pool, billing.tenants, billing.settings):
                log.info("billing grace period: %s", done)
        except Exception:
            log.exception("billing grace sweep failed; retried at the next sweep")


def webhook_router(billing: Billing) -> APIRouter:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweep(billing))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    router = APIRouter(lifespan=lifespan)

    @router.post(WEBHOOK_PATH)
    async def stripe_webhook(request: Request) -> JSONResponse:
        payload = await request.body()
        try:
            event = verify(payload, request.headers.get("stripe-signature"), billing.settings)
        except WebhookRejectedError as error:
            log.warning("stripe webhook refused: %s", error)
            return JSONResponse({"error": str(error)}, status_code=400)
        try:
            outcome = await process(billing.pool, billing.tenants, billing.settings, event)
        except Exception as error:
            log.exception("stripe event %s not processed; Stripe will retry", event.get("id"))
            body: dict[str, Any] = {"error": f"not processed: {type(error).__name__}"}
            return JSONResponse(body, status_code=500)
        return JSONResponse({"verdict": outcome.verdict, "detail": outcome.detail})

    return router
