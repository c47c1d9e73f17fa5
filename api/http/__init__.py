"""The customer HTTP API (`/v1`): accounts, API keys, and the tenant's resources as the same
custom resources the operator reconciles. `create_app(settings)` builds the ASGI app from
`common.settings.ApiSettings`;
`python -m penguinmails.api.http` (or `penguinmails-api`) serves it with uvicorn."""

from .app import create_app

__all__ = ["create_app"]
