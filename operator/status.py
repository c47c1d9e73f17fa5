"""The one status writer of every controller, and the events a status change announces.

Status is written through the status subresource as a JSON merge patch (RFC 7386), computed
from the status as last known (the body, or this process's own last write, which is fresher)
to the desired one:

- the desired status is the kind's typed model from `api/v1alpha1` (current fields, then the
  ones this write sets), validated, then dumped as stored: a field the model refuses is a bug
  of ours caught before it reaches the API server, and a stale field the model no longer
  accepts is dropped rather than blocking every later write;
- every field of the model that is no longer desired, at any depth, is set to null, which a
  merge patch deletes: `lastProbe.error` disappears once the server recovers;
- fields the model does not know are left alone: they belong to another writer.

Why a merge patch and not a replace (PUT) of the whole status: a replace must carry the
resourceVersion it was computed from, and kopf's own annotation patches and any other writer of
the object (another module writing one more status field) move that version between our read
and our write, so replaces conflict all the time; and a replace drops any field its writer does
not know. The merge patch touches only what this writer manages and changed, so an idle pass
writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import kopf
from pydantic import ValidationError

from penguinmails.api.v1alpha1.common import ConditionedStatus
from penguinmails.operator import conditions
from penguinmails.operator.clock import Clock
from penguinmails.operator.conditions import READY, Observed
from penguinmails.operator.errors import ReconcileError
from penguinmails.operator.kube import Kube

StatusT = TypeVar("StatusT", bound=ConditionedStatus)

Summary = Callable[[list[dict[str, Any]]], tuple[Observed, dict[str, Any]]]
"""For kinds whose Ready follows from their other conditions: given the merged conditions,
Ready and the fields that go with it (SmtpServer's phase). Ready then goes out in the same
patch as every condition it depends on."""


def wire_names(model: type[ConditionedStatus]) -> frozenset[str]:
    return frozenset(info.alias or name for name, info in model.model_fields.items())


def removing_patch(
    current: Mapping[str, Any], desired: Mapping[str, Any], managed: frozenset[str]
) -> dict[str, Any]:
    """The merge patch from `current` to `desired`: changed fields, and null for every managed
    top-level field (and every nested key of a changed field) that is no longer desired."""
    patch = conditions.status_patch(current, desired)
    for key in current:
        if key in managed and key not in desired:
            patch[key] = None
    return patch


class StatusWriter(Generic[StatusT]):
    """Writes one object's status, as soon as each part is known and only what changed."""

    def __init__(
        self,
        kube: Kube,
        *,
        api_version: str,
        plural: str,
        body: kopf.Body,
        model: type[StatusT],
        clock: Clock,
        written: dict[str, dict[str, Any]] | None = None,
        summary: Summary | None = None,
    ) -> None:
        self._kube = kube
        self._api_version = api_version
        self._plural = plural
        self._model = model
        self._managed = wire_names(model)
        self._clock = clock
        self._written = written if written is not None else {}
        self._summary = summary
        self.uid = str(body.metadata.uid)
        self.name = str(body.metadata.name)
        namespace = body.metadata.namespace
        self.namespace = str(namespace) if namespace else None
        self.generation = int(body.metadata.get("generation") or 0)
        # The status our last write stored is fresher than a body from the watch, which may not
        # show that write yet; a stale base would make the patch keep fields it should remove.
        self.current: dict[str, Any] = dict(self._written.get(self.uid) or body.status or {})
        self.before: dict[str, Any] = dict(self.current)
        """The status as this pass found it: events compare against it."""

    @property
    def status(self) -> StatusT:
        """The current status as the typed model."""
        return self._model.model_validate(self.current)

    def condition(self, type_: str) -> Mapping[str, Any]:
        return conditions.find(self.current.get("conditions"), type_) or {}

    def desired(self, observed: Sequence[Observed], fields: Mapping[str, Any]) -> dict[str, Any]:
        """The whole status after this write, as the typed model dumps it."""
        unknown = set(fields) - self._managed
        if unknown:
            raise TypeError(f"{self._model.__name__} has no field {', '.join(sorted(unknown))}")
        extra: dict[str, Any] = {}
        merged = None
        if observed:
            now = self._clock.now()
            merged = conditions.merge_conditions(
                self.current.get("conditions"), observed, self.generation, now
            )
            if self._summary is not None and all(item.type != READY for item in observed):
                ready, extra = self._summary(merged)
                merged = conditions.merge_conditions(merged, [ready], self.generation, now)
        state = {k: v for k, v in self.current.items() if k in self._managed}
        for key, value in {**extra, **fields}.items():
            state[key] = value
        state["observedGeneration"] = self.generation
        if merged is not None:
            state["conditions"] = merged
        state = {k: v for k, v in state.items() if v is not None}
        try:
            typed = self._model.model_validate(state)
        except ValidationError as error:
            # A field stored by an older version that the model now refuses is dropped (set to
            # null) rather than blocking every write; a field this write sets must be valid.
            stale = {str(e["loc"][0]) for e in error.errors() if e["loc"]} - set(fields)
            stale -= {"conditions", "observedGeneration"}
            if not stale:
                raise
            typed = self._model.model_validate({k: v for k, v in state.items() if k not in stale})
        # Only what was stated (exclude_unset): the model checks and normalises values but adds
        # no defaults, so a status written before a default existed is not rewritten for it.
        dumped: dict[str, Any] = typed.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude_unset=True
        )
        return dumped

    def patch(self, observed: Sequence[Observed], fields: Mapping[str, Any]) -> dict[str, Any]:
        return removing_patch(self.current, self.desired(observed, fields), self._managed)

    async def write(self, observed: Sequence[Observed] = (), **fields: Any) -> None:
        """Set conditions (`observed`) and fields (wire names; None removes one); write the
        difference, if any."""
        changed = self.patch(observed, fields)
        if not changed:
            return
        stored = await self._kube.patch_status(
            self._api_version, self._plural, self.name, {"status": changed}, self.namespace
        )
        if stored is None:
            return  # deleted meanwhile: nothing left to report on
        self.current = stored
        self._written[self.uid] = stored


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


QUIET = (conditions.RECONCILING, conditions.STALLED)
"""They follow Ready, whose own event says the same."""


def transitions(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    failure: ReconcileError | None = None,
    neutral: frozenset[str] = frozenset(),
) -> list[Event]:
    """The events of one pass: one per condition whose status changed (Normal when it became
    True, else Warning; "not known yet" on the first pass is not news), and one for a failure
    whose reason is not the one Ready already reported. One event per reason. `neutral`
    conditions are states, not health (a Campaign's Sending): their changes are Normal."""
    old = {c.get("type"): c for c in before.get("conditions") or []}
    events: list[Event] = []
    for condition in after.get("conditions") or []:
        if condition.get("type") in QUIET:
            continue
        previous = old.get(condition.get("type")) or {}
        if previous.get("status") == condition.get("status"):
            continue
        if condition.get("status") == "Unknown" and not previous:
            continue
        message = f"{condition['type']}={condition['status']}: {condition.get('message', '')}"
        events.append(
            Event(
                "Normal"
                if condition.get("status") == "True" or condition.get("type") in neutral
                else "Warning",
                str(condition.get("reason") or condition["type"]),
                message[:1024],
            )
        )
    was = (old.get(READY) or {}).get("reason")
    if failure is not None and failure.reason != was:
        events.append(Event("Warning", failure.reason, failure.message[:1024]))
    seen: set[str] = set()
    unique = []
    for event in events:
        if event.reason not in seen:
            seen.add(event.reason)
            unique.append(event)
    return unique


def announce(body: kopf.Body, events: Sequence[Event]) -> None:
    for event in events:
        post = kopf.info if event.type == "Normal" else kopf.warn
        post(body, reason=event.reason, message=event.message)
