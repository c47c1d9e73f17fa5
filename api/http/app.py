"""The ASGI app: `/v1`, OpenAPI 3.1 at `/v1/openapi.json`, interactive docs at `/v1/docs`."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request, Response

from penguinmails.common.keys import MasterKeys
from penguinmails.common.settings import ApiSettings, StripeSettings

from . import audit, idempotency, invitation_mailer
from .dashboard import mount_dashboard
from .errors import ApiError, error_response, install_error_handlers
from .import_runner import runner_of
from .kube import CustomObjects
from .ratelimit import RateState, SourceRateLimit, rate_limited
from .routes import (
    admin,
    api_keys,
    audit_log,
    auth,
    billing,
    campaign_preview,
    campaigns,
    contact_imports,
    contacts,
    delivery_days,
    gdpr,
    members,
    mfa,
    overview,
    reply_address,
    sending_domains,
    smtp_servers,
    suppressions,
    unsubscribe,
    usage,
    webhooks,
)
from .services import Services
from .text_guard import TextGuard
from .tokens import SigningKeyRing

__all__ = ["REQUEST_ID_HEADER", "create_app"]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# A client's own id is kept (to correlate with its logs) when it is short and plain; anything
# else is replaced, so a header cannot inject text into our logs.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def create_app(settings: ApiSettings, *, billing_on: bool | None = None) -> FastAPI:
    """The app; ValueError (naming the variable) when `settings.signing_keys` is not a key ring.
    `billing_on` None: billing and its webhook when PM_STRIPE_API_KEY is set."""
    if billing_on is None:
        billing_on = StripeSettings.configured()
    signing_keys = SigningKeyRing.parse(settings.signing_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10)
        redis = aioredis.from_url(settings.redis_url)
        kube = CustomObjects(settings.kubeconfig)
        app.state.services = Services(settings, signing_keys, pool, redis, kube)
        app.state.unsubscribing = _unsubscribing(pool)
        try:
            async with (
                billing.running(app, settings) if billing_on else nullcontext(),
                invitation_mailer.retrying(pool, settings),
            ):
                yield
        finally:
            await runner_of(app).stop()  # imports under way fail cleanly (import_runner.py)
            kube.close()
            await redis.aclose()
            await pool.close()

    app = FastAPI(
        title="PenguinMails API",
        version="1",
        summary="Sending domains, SMTP servers and campaigns of your PenguinMails tenants.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url="/v1/redoc",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(TextGuard)  # inside request_id (added next): its 400s get the id
    app.add_middleware(SourceRateLimit)  # before TextGuard's scan; its 429s get the id too

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = given if _CLIENT_REQUEST_ID.match(given) else "req_" + secrets.token_hex(12)
        request.state.request_id = rid
        try:
            response = await call_next(request)
        except Exception:
            # Answered here rather than by Starlette's outermost handler, so that the client
            # gets the envelope and the request id to quote.
            log.exception(
                "unexpected failure answering %s %s (request %s)",
                request.method,
                request.url.path,
                rid,
            )
            response = error_response(
                ApiError(500, "api_error", "internal_error", "Something went wrong on our side.")
            )
        claimed: idempotency.Claim | None = getattr(request.state, "idempotency", None)
        if claimed is not None:
            response = await idempotency.finish(svc_of(request).redis, claimed, response)
        response = await audit.record_write(svc_of(request), request, response)
        response.headers[REQUEST_ID_HEADER] = rid
        rate: RateState | None = getattr(request.state, "rate_limit", None)
        if rate is not None:
            response.headers.update(rate.headers())
        return response

    async def on_replay(_request: Request, replay: Exception) -> Response:
        assert isinstance(replay, idempotency.IdempotentReplay)
        return replay.response

    app.add_exception_handler(idempotency.IdempotentReplay, on_replay)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> dict[str, str]:
        """Ready once the database answers (the probes of the chart's Deployment)."""
        svc: Services = request.app.state.services
        await svc.pool.fetchval("SELECT 1")
        return {"status": "ok"}

    v1 = APIRouter(prefix="/v1")
    for module in (
        auth,
        api_keys,
        sending_domains,
        smtp_servers,
        campaigns,
        campaign_preview,
        audit_log,
        gdpr,
        webhooks,
        contacts,
        contact_imports,
        suppressions,
        usage,
        delivery_days,
        overview,
        reply_address,
    ):
        v1.include_router(module.router)
    for module in (mfa, members, admin):  # apiauth: MFA, members and invitations, /v1/admin
        v1.include_router(module.router)
    if billing_on:
        v1.include_router(billing.router)
    app.include_router(v1)
    # RFC 8058 one-click unsubscribe at /u/<token>: the links in sent messages, outside /v1,
    # without authentication (the token is the credential) and outside the OpenAPI document.
    app.include_router(unsubscribe.router)
    if settings.dashboard is not None:
        mount_dashboard(app, settings.dashboard)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_our_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _unsubscribing(pool: asyncpg.Pool) -> unsubscribe.Unsubscribing | None:
    """The unsubscribe pages on the API's pool, when the platform's key ring is set."""
    try:
        return unsubscribe.Unsubscribing(pool, MasterKeys.from_env())
    except ValueError as error:  # its messages never echo the key
        log.warning("the unsubscribe pages answer 503: %s", error)
        return None


def svc_of(request: Request) -> Services:
    found = request.app.state.services
    assert isinstance(found, Services)
    return found


def _with_our_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents its own 422 validation answer; ours is a 400 in the error envelope.
    Every operation the per-source rate limit covers may answer 429 (ratelimit.py)."""
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": "Invalid request",
                    "content": {"application/json": {"schema": envelope}},
                }
            if rate_limited(path):
                responses.setdefault(
                    "429",
                    {
                        "description": "Too many requests: retry after `Retry-After` seconds",
                        "content": {"application/json": {"schema": envelope}},
                    },
                )
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
