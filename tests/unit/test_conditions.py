"""Conditions follow the API conventions: transition times move only on a status change."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from penguinmails.operator.conditions import (
    Observed,
    find,
    merge_conditions,
    status_patch,
)
from penguinmails.operator.errors import backoff_seconds, describe_validation_error

T1 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def test_new_condition_gets_transition_time_and_generation() -> None:
    ready, *_ = merge_conditions(None, [Observed("Ready", "False", "Pending", "m")], 3, now=T1)
    assert ready == {
        "type": "Ready",
        "status": "False",
        "reason": "Pending",
        "message": "m",
        "lastTransitionTime": "2026-01-01T12:00:00Z",
        "observedGeneration": 3,
    }


def test_same_status_keeps_transition_time_but_updates_reason() -> None:
    first = merge_conditions(None, [Observed("Ready", "False", "A", "a")], 1, now=T1)
    second = merge_conditions(first, [Observed("Ready", "False", "B", "b")], 2, now=T2)
    ready = find(second, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert (ready["reason"], ready["observedGeneration"]) == ("B", 2)


def test_status_flip_moves_transition_time_and_keeps_other_types() -> None:
    first = merge_conditions(
        None,
        [Observed("Ready", "False", "A", "a"), Observed("Suspended", "False", "Active", "")],
        1,
        now=T1,
    )
    second = merge_conditions(first, [Observed("Ready", "True", "Ok", "")], 1, now=T2)
    assert find(second, "Ready")["lastTransitionTime"] == "2026-01-02T12:00:00Z"  # type: ignore[index]
    assert find(second, "Suspended") == find(first, "Suspended")


def test_malformed_existing_condition_is_replaced_not_kept() -> None:
    broken = [{"type": "Ready", "status": "Maybe"}]
    merged = merge_conditions(broken, [Observed("Ready", "True", "Ok", "")], 1, now=T1)
    assert [(c["type"], c["status"]) for c in merged] == [
        ("Ready", "True"),
        ("Reconciling", "False"),
        ("Stalled", "False"),
    ]


def _progress(merged: list[dict[str, Any]]) -> tuple[object, object]:
    return find(merged, "Reconciling")["status"], find(merged, "Stalled")["status"]  # type: ignore[index]


def test_ready_brings_reconciling_and_stalled_for_kstatus() -> None:
    """kstatus (Flux) reads Reconciling=True as InProgress and Stalled=True as Failed."""
    waiting = merge_conditions(None, [Observed("Ready", "False", "Pending", "dns")], 1, now=T1)
    assert _progress(waiting) == ("True", "False")
    assert find(waiting, "Reconciling")["message"] == "dns"  # type: ignore[index]
    invalid = merge_conditions(waiting, [Observed("Ready", "False", "InvalidSpec", "x")], 2, now=T2)
    assert _progress(invalid) == ("False", "True")
    assert find(invalid, "Stalled")["lastTransitionTime"] == "2026-01-02T12:00:00Z"  # type: ignore[index]
    refused = Observed("Ready", "False", "QuotaExceeded", "no", permanent=True)
    assert _progress(merge_conditions(None, [refused], 1, now=T1)) == ("False", "True")
    ready = merge_conditions(invalid, [Observed("Ready", "True", "Ok", "")], 3, now=T2)
    assert _progress(ready) == ("False", "False")


def test_without_ready_the_progress_conditions_are_left_alone() -> None:
    first = merge_conditions(None, [Observed("Ready", "False", "Pending", "m")], 1, now=T1)
    second = merge_conditions(first, [Observed("DNSPublished", "True", "Ok", "")], 1, now=T2)
    assert _progress(second) == ("True", "False")


def test_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [backoff_seconds(n) for n in range(12)]
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0]
    assert max(delays) == 600.0
    assert delays == sorted(delays)


def test_validation_errors_name_the_yaml_field() -> None:
    class Spec(BaseModel):
        tier: int

    try:
        Spec.model_validate({"tier": "gold"})
    except ValidationError as error:
        message = describe_validation_error(error)
    assert message.startswith("spec.tier: ")


def test_status_patch_removes_nested_fields_that_are_no_longer_desired() -> None:
    current = {
        "lastProbe": {"time": "t1", "banner": "220 hi", "error": "connection refused"},
        "phase": "Ready",
        "owner": "someone else",
    }
    desired = {"lastProbe": {"time": "t2", "banner": "220 hi"}, "phase": "Ready"}
    patch = status_patch(current, desired)
    # Equal fields are left out; fields nobody asked about are left alone.
    assert patch == {"lastProbe": {"time": "t2", "error": None}}
    assert apply_patch(current, patch) == {**desired, "owner": "someone else"}


def test_status_patch_is_empty_when_nothing_changed_and_deletes_none_fields() -> None:
    current = {"a": {"b": {"c": 1, "d": 2}}, "e": [1, 2], "f": "x"}
    assert status_patch(current, dict(current)) == {}
    patch = status_patch(current, {"a": {"b": {"c": 1}}, "e": [1], "f": None})
    assert patch == {"a": {"b": {"d": None}}, "e": [1], "f": None}
    assert apply_patch(current, patch) == {"a": {"b": {"c": 1}}, "e": [1]}


def apply_patch(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """What the API server stores after a JSON merge patch: None deletes, objects merge."""
    result = dict(current)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = apply_patch(result[key], value)
        else:
            result[key] = value
    return result
