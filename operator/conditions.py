"""Conditions as one reconcile observed them, merged into status with the shared model.

`set_condition` (from the resource models) moves `lastTransitionTime` only when a condition's
status changes, so a reconcile that finds nothing new produces the same list and writes nothing.

Every kind's Ready also sets the two conditions that kstatus (`sigs.k8s.io/cli-utils`, what Flux
reads) and the chart's Argo CD checks look for first: `Stalled=True` when Ready=False is a
permanent failure (kstatus: Failed), `Reconciling=True` while Ready is not yet True for any other
reason (kstatus: InProgress), both False once Ready=True (kstatus: Current). Without Stalled,
kstatus reads Ready=False as InProgress forever and Flux waits out its timeout on an invalid spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from penguinmails.api.v1alpha1 import Condition, ConditionStatus, set_condition

Status = Literal["True", "False", "Unknown"]

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
PERMANENT_REASONS = frozenset(
    {
        "InvalidSpec",  # every kind: the spec does not parse
        "Forbidden",  # the operator's RBAC (operator/errors.py): the chart must grant it
        "Rejected",  # the API server's admission refused an object the operator made
        "SendersUnschedulable",  # Tenant: its sender pods need nodes (or capacity), not a retry
        "DestinationNotAllowed",  # the egress policy (common/egress.py) refuses a spec's host
        "DKIMSecretMalformed",  # SendingDomain: the key Secret must be restored or deleted
        "StopRule",  # Campaign: a stop rule fired; a person decides what happens next
        "SenderFault",  # Campaign: the sender paused it; a person must fix and resume
        "SenderAuthenticationFailed",  # Campaign: receivers reject our DKIM/SPF/DMARC
    }
)
"""Ready=False reasons that retrying cannot fix. The chart's Argo CD checks read Stalled first;
their own lists of reasons only serve objects written before Stalled existed."""


@dataclass(frozen=True)
class Observed:
    """What one reconcile concluded about one condition type."""

    type: str
    status: Status
    reason: str
    message: str
    permanent: bool = False
    """For Ready=False: a failure no retry fixes though its reason is not in PERMANENT_REASONS
    (e.g. a provider error the provider marks as not transient)."""


def progress(ready: Observed) -> list[Observed]:
    """Reconciling and Stalled as they follow from the Ready the reconcile concluded."""
    if ready.status == "True":
        done = "Ready is True"
        return [
            Observed(RECONCILING, "False", ready.reason, done),
            Observed(STALLED, "False", ready.reason, done),
        ]
    stalled = ready.status == "False" and (ready.permanent or ready.reason in PERMANENT_REASONS)
    return [
        Observed(RECONCILING, "False" if stalled else "True", ready.reason, ready.message),
        Observed(STALLED, "True" if stalled else "False", ready.reason, ready.message),
    ]


def _parse(raw: Mapping[str, Any]) -> Condition | None:
    try:
        return Condition.model_validate(dict(raw))
    except ValidationError:
        return None  # A hand-edited, malformed condition is replaced rather than kept.


def merge_conditions(
    current: Sequence[Mapping[str, Any]] | None,
    observed: Sequence[Observed],
    generation: int,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The new conditions list: observed types updated, other existing types kept as they were.

    An observed Ready brings its Reconciling and Stalled (see `progress`)."""
    conditions = [c for c in (_parse(raw) for raw in current or ()) if c is not None]
    ready = [item for item in observed if item.type == READY]
    for item in [*observed, *(progress(ready[-1]) if ready else ())]:
        conditions = set_condition(
            conditions,
            item.type,
            ConditionStatus(item.status),
            item.reason,
            item.message,
            observed_generation=generation,
            now=now,
        )
    return [condition.to_k8s() for condition in conditions]


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `current` into `desired`, field by field.

    Only the keys of `desired` are managed (other writers' fields are left alone); inside them a
    nested key that is no longer desired becomes None, which a merge patch deletes, so a field
    such as `lastProbe.error` disappears once the server recovers. Equal values are left out:
    an idle reconcile patches nothing.
    """
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if old == value:
            continue
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = status_patch(old, value)
            nested.update({k: None for k in old if k not in value})
            patch[key] = nested
        else:
            patch[key] = value
    return patch
