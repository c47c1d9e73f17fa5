"""Prometheus metrics, named as controller-runtime names them so existing dashboards work."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

RECONCILE_TOTAL = Counter(
    "penguinmails_reconcile_total",
    "Reconciles run, by kind and result (success, error, or yielded: a timer pass that gave "
    "way to a change of its object).",
    ["kind", "result"],
)
RECONCILE_ERRORS = Counter(
    "penguinmails_reconcile_errors_total",
    "Reconciles that ended in an error condition, by kind and reason.",
    ["kind", "reason"],
)
RECONCILE_SECONDS = Histogram(
    "penguinmails_reconcile_duration_seconds",
    "Time spent in one reconcile, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

RESYNC_PASSES = Counter(
    "penguinmails_resync_passes_total",
    "Timer passes, by kind and depth: `cheap` read what could have drifted unseen and wrote "
    "nothing; `full` stated the whole desired state (docs/scaling.md).",
    ["kind", "depth"],
)
KUBE_REQUESTS = Counter(
    "penguinmails_kube_requests_total",
    "Requests the controllers made to the API server (kopf's own watches and status patches "
    "excluded), by the kind being reconciled, the pass (change, cheap, full) and the verb.",
    ["controller", "pass_", "verb"],
)

_pass: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "penguinmails_pass", default=("none", "none")
)


@dataclass
class Outcome:
    """How a reconcile ended, when not by returning (`success`) or raising (`error`):
    `yielded`, a timer pass that gave way to a change of its object (operator/controller.py)."""

    result: str | None = None


@contextmanager
def observe(kind: str, depth: str = "change") -> Iterator[Outcome]:
    """Count one reconcile of `kind`; API requests made inside are counted as this pass's."""
    started = time.perf_counter()
    result = "error"
    outcome = Outcome()
    token = _pass.set((kind, depth))
    try:
        yield outcome
        result = outcome.result or "success"
    finally:
        _pass.reset(token)
        RECONCILE_TOTAL.labels(kind=kind, result=result).inc()
        RECONCILE_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)


def count_request(verb: str) -> None:
    """One request to the API server, attributed to the pass running in this task."""
    controller, depth = _pass.get()
    KUBE_REQUESTS.labels(controller=controller, pass_=depth, verb=verb).inc()
