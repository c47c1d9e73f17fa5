"""The DKIM rotation's times, as `SendingDomain.status.dkim` shows them (the Domains page's
timeline): pure functions of the key set the rotation keeps (common/dkim/rotation.py) and the
status written before, so the dashboard shows what the operator decided and never works it
out itself.

The key set records created, verified (published: served by every authoritative nameserver)
and activated times, and one `retire_at` whose meaning follows the state: for a Retiring key
the moment it is revoked (stopped at `retiring + retireAfter`), for a Revoked one the moment
its record goes (`revoked + retireAfter`). So a key stopped signing at `retire_at -
retireAfter` (Retiring) or `retire_at - 2 * retireAfter` (Revoked), and its record is removed
at `retire_at + retireAfter` or `retire_at`. Keys the rotation dropped leave the key set:
their last times move to `dkim.removed` (newest first, at most `REMOVED_KEPT`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from penguinmails.common.dkim.keys import DkimKey, KeyState

__all__ = ["REMOVED_KEPT", "iso", "removed_selectors", "selector_times"]

REMOVED_KEPT = 8
"""Removed keys shown: a year of monthly rotation of two algorithms is 24; the last few tell
the story of the current keys."""


_LIFE = ("createdAt", "publishedAt", "activatedAt", "retiringAt")


def iso(value: datetime | None) -> str | None:
    """A status timestamp: UTC, to the second (as Kubernetes writes its own)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def selector_times(key: DkimKey, retire_after: timedelta) -> dict[str, str]:
    """`publishedAt`, `activatedAt`, `retiringAt`, `removeAt` of one key (those known)."""
    retiring: datetime | None = None
    remove: datetime | None = None
    if key.retire_at is not None and key.state == KeyState.RETIRING:
        retiring, remove = key.retire_at - retire_after, key.retire_at + retire_after
    elif key.retire_at is not None and key.state == KeyState.REVOKED:
        retiring, remove = key.retire_at - 2 * retire_after, key.retire_at
    if retiring is not None and key.activated_at is None:
        retiring = None  # a Pending key whose algorithm was dropped never signed
    times = {
        "publishedAt": iso(key.verified_at),
        "activatedAt": iso(key.activated_at),
        "retiringAt": iso(retiring),
        "removeAt": iso(remove),
    }
    return {name: value for name, value in times.items() if value is not None}


def removed_selectors(
    previous: Mapping[str, Any] | None, current: Sequence[Mapping[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """`dkim.removed`: the selectors of the previous status no longer in `current`, removed
    now (their record went with this pass), before those removed earlier."""
    previous = previous or {}
    kept = {str(s.get("selector")) for s in current}
    gone = [
        {
            "selector": s["selector"],
            "algorithm": s["algorithm"],
            **{
                k: s[k]
                for k in ("createdAt", "publishedAt", "activatedAt", "retiringAt")
                if s.get(k)
            },
            "removedAt": iso(now),
        }
        for s in previous.get("selectors") or []
        if s.get("selector") and str(s["selector"]) not in kept
    ]
    earlier = [r for r in previous.get("removed") or [] if str(r.get("selector")) not in kept]
    names = {g["selector"] for g in gone}
    return (gone + [r for r in earlier if r.get("selector") not in names])[:REMOVED_KEPT]
