"""A typed client of the customer HTTP API (docs/api.md), used by the `penguinmails` CLI:
`credentials` (the stored sign-in), `session` (authentication, refresh, errors, pages),
`resources` (one method per endpoint)."""

from penguinmails.api.client.credentials import Credentials, credentials_path
from penguinmails.api.client.resources import Client
from penguinmails.api.client.session import ApiError, Session

__all__ = ["ApiError", "Client", "Credentials", "Session", "credentials_path"]
