"""Test support for billing: the webhook router served by uvicorn, and signed Stripe events.

The router is mounted in a minimal FastAPI app (the product's HTTP API mounts the same router)
served by a real uvicorn on a free loopback port, in a thread with its own event loop, its own
PostgreSQL pool (on the billing login, `billing_database_url`) and its own Kubernetes client:
the tests reach it only over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
import uvicorn
from fastapi import FastAPI

from penguinmails.api.billing.tenants import TenantWriter
from penguinmails.api.billing.webhook_route import WEBHOOK_PATH, Billing, webhook_router
from penguinmails.common.settings import StripeSettings
from penguinmails.devstack.api import billing_login
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.stack import api_client_for

WEBHOOK_SECRET = "whsec_penguinmailsTestSecret"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def billing_database_url(postgres_dsn: str) -> str:
    """The billing code's own login (`billing_login()`: penguinmails_billing only), as the
    chart's Secret would name: what production gives PM_BILLING_DATABASE_URL."""
    return await billing_login(postgres_dsn)


def stripe_settings(api_base: str, *, grace_seconds: float = 3 * 86400.0) -> StripeSettings:
    """The production defaults but for the key, the secret and the address of stripe-mock."""
    return StripeSettings(
        api_key="sk_test_penguinmails",
        webhook_secret=WEBHOOK_SECRET,
        api_base=api_base,
        webhook_tolerance_seconds=300,
        grace_seconds=grace_seconds,
        meter_event_name="penguinmails_emails",
        checkout_success_url="https://app.example.com/billing?ok",
        checkout_cancel_url="https://app.example.com/billing?cancel",
        portal_return_url="https://app.example.com/billing",
    )


class WebhookServer:
    """uvicorn serving the billing router; `deliver()` posts a signed event and tallies verdicts."""

    def __init__(self, dsn: str, kubeconfig: Path, settings: StripeSettings) -> None:
        self.dsn = dsn
        self.kubeconfig = kubeconfig
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"
        self.tally: Counter[str] = Counter()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _serve(self) -> None:
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        try:
            billing = Billing(pool, TenantWriter(api_client_for(self.kubeconfig)), self.settings)
            app = FastAPI()
            app.include_router(webhook_router(billing))
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
            self._server = uvicorn.Server(config)
            await self._server.serve()
        finally:
            await pool.close()

    def start(self) -> WebhookServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not (self._server is not None and self._server.started):
            assert self._thread.is_alive(), "the webhook server died while starting"
            assert time.monotonic() < deadline, "the webhook server did not start within 30s"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)

    def deliver(
        self,
        event: dict[str, Any],
        *,
        secret: str = WEBHOOK_SECRET,
        signed_at: float | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        """POST `event` as Stripe does: the raw JSON, signed `t=<unix>,v1=<hmac>`."""
        payload = json.dumps(event).encode()
        if signature is None:
            signature = sign(payload, secret, signed_at)
        response = httpx.post(
            self.url,
            content=payload,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
            timeout=30,
        )
        # 400: refused (signature, timestamp, body); 500: failed, for Stripe to deliver again.
        verdict = {400: "refused", 500: "failed"}.get(response.status_code) or str(
            response.json().get("verdict", "?")
        )
        self.tally[verdict] += 1
        return response


def sign(payload: bytes, secret: str, signed_at: float | None = None) -> str:
    """A Stripe-Signature header value over `payload`."""
    stamp = int(signed_at if signed_at is not None else time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


@dataclass
class Events:
    """Builds events with unique ids and strictly increasing creation times from `start`."""

    start: float
    prefix: str
    counter: int = field(default=0)

    def make(
        self, type_: str, obj: dict[str, Any], *, created: float | None = None
    ) -> dict[str, Any]:
        self.counter += 1
        return {
            "id": f"evt_{self.prefix}{self.counter}",
            "object": "event",
            "type": type_,
            "created": int(created if created is not None else self.start + self.counter),
            "livemode": False,
            "api_version": "2025-03-31.basil",
            "data": {"object": obj},
        }


def subscription(
    sub_id: str, customer: str, tenant: str, status: str, price: str
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "metadata": {"tenant": tenant},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id[4:]}",
                    "object": "subscription_item",
                    "price": {"id": price, "object": "price"},
                }
            ],
        },
    }


def invoice(sub_id: str, customer: str) -> dict[str, Any]:
    return {
        "id": f"in_{sub_id[4:]}{int(time.time() * 1000)}",
        "object": "invoice",
        "customer": customer,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub_id},
        },
    }


def checkout_session(tenant: str, customer: str, sub_id: str) -> dict[str, Any]:
    return {
        "id": f"cs_test_{tenant.replace('-', '')}",
        "object": "checkout.session",
        "mode": "subscription",
        "client_reference_id": tenant,
        "customer": customer,
        "subscription": sub_id,
        "metadata": {"tenant": tenant},
    }
