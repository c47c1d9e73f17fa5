"""Prometheus metrics, named as controller-runtime names them so existing dashboards work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

RECONCILE_TOTAL = Counter(
    "penguinmails_reconcile_total",
    "Reconciles run, by kind and result.",
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


@contextmanager
def observe(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    result = "error"
    try:
        yield
        result = "success"
    finally:
        RECONCILE_TOTAL.labels(kind=kind, result=result).inc()
        RECONCILE_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
