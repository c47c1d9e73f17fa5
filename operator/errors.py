"""The one failure type of every controller, and how any exception becomes one.

A reconcile fails with a `ReconcileError`: a condition reason (one CamelCase word), a message
that names the cause and the fix, and whether retrying later can help. Providers (Hostwinds,
MailU, DNS) raise it directly; anything else (the API server, the network, a bug) is turned
into one by `describe`. The framework (operator/controller.py) then writes the reason and
message into the failing step's condition and Ready, and backs off when the error is transient.

Messages come from our own text or from the API server's `message` field, never from a raw
response body: bodies can echo what was sent, and what was sent can hold secrets.
"""

from __future__ import annotations

import json

from kubernetes.client.rest import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError as TransportError

MAX_BACKOFF_SECONDS = 600.0


def backoff_seconds(retry: int, base: float = 2.0) -> float:
    """Exponential backoff by attempt number, capped so a broken object is re-tried every 10 min."""
    return float(min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, retry)))


class ReconcileError(Exception):
    """A reconcile could not do what it had to.

    ``reason`` becomes the condition reason; ``message`` names the cause and the fix and never
    holds a secret; ``transient`` says whether retrying later can help (a permanent failure
    makes the object Stalled, kstatus Failed, and is not retried until something changes).
    """

    def __init__(self, reason: str, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient

    def __repr__(self) -> str:
        return f"ReconcileError({self.reason!r}, {self.message!r}, transient={self.transient})"


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


def describe(error: BaseException) -> ReconcileError:
    """Turn any reconcile failure into the one error type: reason, message, transient."""
    if isinstance(error, ReconcileError):
        return error
    if isinstance(error, ApiException):
        detail = _api_message(error)
        if error.status == 403:
            return ReconcileError(
                "Forbidden",
                f"the operator's ServiceAccount may not do this ({detail}); "
                "grant it with the Helm chart's ClusterRole",
                transient=False,
            )
        if error.status in (400, 422):
            return ReconcileError(
                "Rejected", f"the API server rejected an object: {detail}", transient=False
            )
        return ReconcileError(
            "KubernetesAPIError", f"Kubernetes API error {error.status}: {detail}; retrying"
        )
    if isinstance(error, (ConnectionError, TimeoutError, OSError)):
        return ReconcileError("Unreachable", f"{type(error).__name__}: {error}; retrying")
    if isinstance(error, TransportError):
        # A timed-out or refused call to the API server, after the client's own retries.
        return ReconcileError(
            "Unreachable",
            f"the Kubernetes API server did not answer ({type(error).__name__}); retrying",
        )
    return ReconcileError("ReconcileError", f"{type(error).__name__}: {error}; retrying")
