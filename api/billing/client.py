"""The one way to build the Stripe client: key and base address from `StripeSettings`."""

from __future__ import annotations

from stripe import StripeClient

from penguinmails.common.settings import StripeSettings

# Retries of a failed request (network error, 409 lock, 429, 5xx) with Stripe's own backoff;
# the client gives every POST one idempotency key for all its attempts, so a retry never acts
# twice.
NETWORK_RETRIES = 2


def stripe_client(settings: StripeSettings) -> StripeClient:
    """A client of Stripe's API at `settings.api_base` (stripe-mock in the tests)."""
    return StripeClient(
        settings.api_key,
        base_addresses={"api": settings.api_base},
        max_network_retries=NETWORK_RETRIES,
    )
