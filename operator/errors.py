"""How a failed reconcile becomes a condition, a retry delay and an event, never a crash.

Messages come from our own text or from the API server's `message` field, never from a raw
response body: bodies can echo what was sent, and what was sent can hold secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kubernetes.client.rest import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError as TransportError

MAX_BACKOFF_SECONDS = 600.0


def backoff_seconds(retry: int, base: float = 2.0) -> float:
    """Exponential backoff by attempt number, capped so a broken object is re-tried every 10 min."""
    return float(min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, retry)))


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


def describe_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """One line per problem, each naming the field path as it appears in YAML."""
    lines = []
    for item in error.errors():
        path = ".".join([prefix, *(str(part) for part in item["loc"])])
        lines.append(f"{path}: {item['msg']}")
    return "; ".join(lines)


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message", "")) or str(error.reason)
    except (ValueError, AttributeError):
        return str(error.reason)


class ConfigurationError(Exception):
    """Something the platform team must fix (a missing Secret, a bad setting): reason + message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def describe(error: BaseException) -> Failure:
    """Turn any reconcile failure into a condition reason and a message that says what to do."""
    if isinstance(error, ConfigurationError):
        return Failure(error.reason, error.message)
    if isinstance(error, ApiException):
        detail = _api_message(error)
        if error.status == 403:
            return Failure(
                "Forbidden",
                f"the operator's ServiceAccount may not do this ({detail}); "
                "grant it with the Helm chart's ClusterRole",
            )
        if error.status in (400, 422):
            return Failure("Rejected", f"the API server rejected an object: {detail}")
        return Failure(
            "KubernetesAPIError", f"Kubernetes API error {error.status}: {detail}; retrying"
        )
    if isinstance(error, (ConnectionError, TimeoutError, OSError)):
        return Failure("Unreachable", f"{type(error).__name__}: {error}; retrying")
    if isinstance(error, TransportError):
        # A timed-out or refused call to the API server, after the client's own retries.
        return Failure(
            "Unreachable",
            f"the Kubernetes API server did not answer ({type(error).__name__}); retrying",
        )
    return Failure("ReconcileError", f"{type(error).__name__}: {error}; retrying")
