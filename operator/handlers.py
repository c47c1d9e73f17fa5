"""One way to attach a level-based controller to kopf.

Every kind is reconciled the same way: one function serves create, update, resume and a resync
timer (level-based: it states the whole desired state every time), and one cleans up on delete
(kopf adds the finalizer). Controllers differ only in what those two functions do; the
framework every kind is built on (operator/controller.py) attaches itself through here.

kopf runs an object's timer and its change handlers in separate tasks, so without a lock two
passes of one object can overlap (two SendingDomain passes generating keys under the same dated
selector, two SmtpServer passes ordering a server). One lock per object (by uid) serialises the
change handler, the timer and the delete handler; a timer tick that finds a pass running skips,
since the running pass already states the whole desired state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import kopf

from penguinmails.api.v1alpha1 import API_GROUP, API_VERSION
from penguinmails.operator.kube import FIELD_MANAGER


class Reconcile(Protocol):
    """`timer` is True for the periodic re-check, False for a change or a restart."""

    async def __call__(
        self,
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        memo: kopf.Memo,
        logger: kopf.Logger,
        timer: bool,
    ) -> None: ...


class Cleanup(Protocol):
    async def __call__(
        self, *, body: kopf.Body, retry: int, memo: kopf.Memo, logger: kopf.Logger
    ) -> None: ...


class ObjectLocks:
    """One asyncio lock per object uid, dropped when the object's cleanup is done."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def locked(self, uid: str) -> bool:
        lock = self._locks.get(uid)
        return lock is not None and lock.locked()

    @asynccontextmanager
    async def hold(self, uid: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            yield

    def forget(self, uid: str) -> None:
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]


def register_controller(
    registry: kopf.OperatorRegistry,
    *,
    plural: str,
    interval: float,
    reconcile: Reconcile,
    cleanup: Cleanup,
) -> None:
    """Attach `reconcile` (changes, resume, every `interval` seconds) and `cleanup` (delete)."""
    resource = (API_GROUP, API_VERSION, plural)
    locks = ObjectLocks()

    @kopf.on.resume(*resource, registry=registry, id=f"{plural}-changed")
    @kopf.on.create(*resource, registry=registry, id=f"{plural}-changed")
    @kopf.on.update(*resource, registry=registry, id=f"{plural}-changed")
    async def changed(
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        logger: kopf.Logger,
        retry: int = 0,
        **_: Any,
    ) -> None:
        async with locks.hold(str(body.metadata.uid)):
            await reconcile(
                body=body, patch=patch, retry=retry, memo=memo, logger=logger, timer=False
            )

    @kopf.timer(
        *resource,
        registry=registry,
        id=f"{plural}-resync",
        interval=interval,
        initial_delay=interval,
    )
    async def resync(
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        logger: kopf.Logger,
        retry: int = 0,
        **_: Any,
    ) -> None:
        uid = str(body.metadata.uid)
        if locks.locked(uid):
            return  # a pass of this object is running; the next tick re-checks
        async with locks.hold(uid):
            await reconcile(
                body=body, patch=patch, retry=retry, memo=memo, logger=logger, timer=True
            )

    @kopf.on.delete(*resource, registry=registry, id=f"{plural}-deleted")
    async def deleted(
        *, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int = 0, **_: Any
    ) -> None:
        uid = str(body.metadata.uid)
        async with locks.hold(uid):
            await cleanup(body=body, retry=retry, memo=memo, logger=logger)
        locks.forget(uid)


def repair_children(
    registry: kopf.OperatorRegistry,
    *,
    owner_kind: str,
    label: str,
    nudge_annotation: str,
    children: tuple[tuple[str, str] | tuple[str, str, str], ...],
) -> None:
    """Re-run the owner's reconcile within seconds of one of its children being deleted or
    edited by someone else, so that the resync need not re-apply children to find drift.

    Children are watched by `label` (a server-side label selector: only our children are listed
    and streamed, not every Deployment of the cluster); the label's value names the owner. The
    owner's change handler runs because `nudge_annotation` is set on it (our annotations are
    changes for kopf: operator/bookkeeping.py).

    An edit is another field manager owning fields of the child outside `metadata` and
    `status` (`foreign_edit`): a `kubectl edit` or `scale` takes the fields it changed from us.
    Controllers that annotate a child (the Deployment's revision) or write its status are not
    edits. After the repair our apply owns those fields again and the edit's entry is gone or
    left with fields we do not set; each entry nudges once per process (`seen`).
    """
    seen: dict[str, str] = {}

    @kopf.on.startup(registry=registry)
    def select_children(settings: kopf.OperatorSettings, **_: Any) -> None:
        for child in children:
            settings.watching.label_selectors[child] = label

    async def child_changed(
        *, type: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        owner = body.metadata.labels.get(label)
        uid = str(body.metadata.uid)
        if not owner:
            return
        kind, name = body.get("kind", "object"), body.metadata.name
        if type == "DELETED":
            seen.pop(uid, None)
            what = "deleted"
            # The value names the deleted child by uid: every deletion is a change for kopf.
            value = f"{kind}/{name}/{uid}"
        else:
            edit = foreign_edit(body.metadata.get("managedFields") or [])
            if edit is None or seen.get(uid) == edit:
                return
            seen[uid] = edit
            what = f"edited by {edit.split('@', 1)[0]}"
            value = f"{kind}/{name}/{uid}/{edit}"
        logger.info("%s %s %s; reconciling %s %s", kind, name, what, owner_kind, owner)
        nudge = {"metadata": {"annotations": {nudge_annotation: value}}}
        await memo.context.kube.merge_patch(f"{API_GROUP}/{API_VERSION}", owner_kind, owner, nudge)

    for child in children:
        kopf.on.event(*child, registry=registry, labels={label: kopf.PRESENT})(child_changed)


def foreign_edit(managed_fields: Sequence[Mapping[str, Any]]) -> str | None:
    """`manager@time` of the latest entry of another manager than ours that owns fields of
    the object itself or its scale (not its metadata, not its status), or None."""
    edits = [
        entry
        for entry in managed_fields
        if entry.get("manager") != FIELD_MANAGER
        and entry.get("subresource") in (None, "", "scale")
        and set(entry.get("fieldsV1") or {}) - {"f:metadata", "f:status", "f:apiVersion", "f:kind"}
    ]
    if not edits:
        return None
    latest = max(edits, key=lambda entry: str(entry.get("time") or ""))
    return f"{latest.get('manager')}@{latest.get('time')}"
