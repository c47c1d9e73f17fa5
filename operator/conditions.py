"""Conditions as the Kubernetes API conventions define them, computed without side effects.

`lastTransitionTime` only moves when a condition's status changes, so a reconcile that finds
nothing new writes nothing (status is patched only when it differs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Observed:
    """What one reconcile concluded about one condition type."""

    type: str
    status: Status
    reason: str
    message: str


def merge_conditions(
    current: Sequence[Mapping[str, Any]] | None,
    observed: Sequence[Observed],
    generation: int,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The new conditions list: observed types updated, other existing types kept as they were."""
    by_type = {str(c.get("type")): dict(c) for c in current or ()}
    stamp = now or now_rfc3339()
    for item in observed:
        previous = by_type.get(item.type)
        changed = previous is None or previous.get("status") != item.status
        by_type[item.type] = {
            "type": item.type,
            "status": item.status,
            "reason": item.reason,
            "message": item.message,
            "lastTransitionTime": stamp if changed else previous.get("lastTransitionTime", stamp),
            "observedGeneration": generation,
        }
    return sorted(by_type.values(), key=lambda c: str(c["type"]))


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)
