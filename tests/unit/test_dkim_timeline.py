"""The DKIM rotation timeline in status: a key's life through the real rotation state machine
(common/dkim/rotation.py), day by day, as the SendingDomain controller writes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from penguinmails.common.dkim.keys import KeySet
from penguinmails.common.dkim.rotation import RotationPolicy, advance
from penguinmails.operator.dkim_timeline import REMOVED_KEPT, removed_selectors, selector_times

POLICY = RotationPolicy(
    algorithms=("ed25519",),
    selector_prefix="pm",
    rotate_after=timedelta(days=30),
    retire_after=timedelta(days=7),
    ttl=timedelta(hours=1),
)
START = datetime(2026, 1, 1, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_of(key_set: KeySet, previous: dict[str, Any], now: datetime) -> dict[str, Any]:
    selectors = [
        {
            "selector": k.selector,
            "algorithm": k.algorithm,
            "createdAt": iso(k.created_at),
            **selector_times(k, POLICY.retire_after),
        }
        for k in key_set.keys
    ]
    dkim: dict[str, Any] = {"selectors": selectors}
    removed = removed_selectors(previous, selectors, now)
    if removed:
        dkim["removed"] = removed
    return dkim


def test_a_key_from_creation_to_removal() -> None:
    key_set = KeySet(())
    dkim: dict[str, Any] = {}
    now = START
    history: dict[str, dict[str, Any]] = {}
    # Every hour for 60 days, every record served by every nameserver.
    while now < START + timedelta(days=60):
        key_set, _ = advance(key_set, POLICY, now=now, verified={k.selector for k in key_set.keys})
        dkim = status_of(key_set, dkim, now)
        for item in dkim["selectors"]:
            history[item["selector"]] = item
        now += timedelta(hours=1)
    first, second = sorted(history)[:2]
    # The first key: created at the start, published on the next pass (its record served),
    # signing one TTL later, retiring when the second took over 30 days after creation, its
    # record removed two retireAfter later (revoked with an empty p= in between).
    removed = {r["selector"]: r for r in dkim["removed"]}
    life = removed[first]
    assert life["createdAt"] == iso(START)
    assert life["publishedAt"] == iso(START + timedelta(hours=1))
    assert life["activatedAt"] == iso(START + timedelta(hours=2))
    took_over = datetime.fromisoformat(history[second]["activatedAt"])
    assert life["retiringAt"] == iso(took_over)
    assert life["removedAt"] == iso(took_over + 2 * POLICY.retire_after)
    # While it was still there, its planned removal was the same time.
    assert history[first]["removeAt"] == life["removedAt"]
    # The second key signs now: no retiring, no removal planned.
    current = {s["selector"]: s for s in dkim["selectors"]}
    assert "retiringAt" not in current[second] and "removeAt" not in current[second]


def test_removed_keeps_the_newest_few() -> None:
    now = START
    previous: dict[str, Any] = {
        "selectors": [{"selector": "new", "algorithm": "ed25519", "createdAt": iso(now)}],
        "removed": [
            {"selector": f"old{i}", "algorithm": "rsa2048", "removedAt": iso(now)}
            for i in range(REMOVED_KEPT)
        ],
    }
    removed = removed_selectors(previous, [], now)
    assert [r["selector"] for r in removed] == ["new"] + [f"old{i}" for i in range(7)]
    # Nothing removed by this pass: the list stays as it was.
    assert removed_selectors({"selectors": [], "removed": removed}, [], now) == removed
