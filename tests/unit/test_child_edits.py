"""Which managedFields entries are someone else's edit of a child (child_watch.foreign_edit)."""

from __future__ import annotations

from typing import Any

import pytest

from penguinmails.operator.child_watch import foreign_edit
from penguinmails.operator.kube import FIELD_MANAGER

OURS = {
    "manager": FIELD_MANAGER,
    "operation": "Apply",
    "time": "2026-12-01T10:00:00Z",
    "fieldsV1": {"f:spec": {"f:hard": {}}},
}


def entry(manager: str, fields: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "manager": manager,
        "operation": "Update",
        "time": "2026-12-01T10:05:00Z",
        "fieldsV1": fields,
    }
    if subresource:
        found["subresource"] = subresource
    return found


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([OURS], None),
        # kubectl edit of the quota's spec: an edit.
        (
            [OURS, entry("kubectl-edit", {"f:spec": {"f:hard": {"f:pods": {}}}})],
            "kubectl-edit@2026-12-01T10:05:00Z",
        ),
        # kubectl scale: the scale subresource is the object's replicas.
        (
            [OURS, entry("kubectl", {"f:spec": {"f:replicas": {}}}, "scale")],
            "kubectl@2026-12-01T10:05:00Z",
        ),
        # The Deployment controller's revision annotation and any status write: not edits.
        (
            [
                OURS,
                entry(
                    "kube-controller-manager",
                    {"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}},
                ),
            ],
            None,
        ),
        (
            [OURS, entry("kube-controller-manager", {"f:status": {"f:replicas": {}}}, "status")],
            None,
        ),
        ([OURS, entry("kubectl-label", {"f:metadata": {"f:labels": {"f:x": {}}}})], None),
        # A Secret has no spec: an edit of its data (the sender Secret) is an edit too.
        (
            [OURS, entry("kubectl-edit", {"f:data": {"f:PM_TOKEN_KEY": {}}})],
            "kubectl-edit@2026-12-01T10:05:00Z",
        ),
    ],
)
def test_foreign_edit(entries: list[dict[str, Any]], expected: str | None) -> None:
    assert foreign_edit(entries) == expected
