"""One way to attach a level-based controller to kopf.

Every kind is reconciled the same way: one function serves create, update, resume and a resync
timer (level-based: it states the whole desired state every time), and one cleans up on delete
(kopf adds the finalizer). Controllers differ only in what those two functions do.
"""

from __future__ import annotations

from typing import Any, Protocol

import kopf

from penguinmails.api.v1alpha1 import API_GROUP, API_VERSION


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
        await reconcile(body=body, patch=patch, retry=retry, memo=memo, logger=logger, timer=False)

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
        await reconcile(body=body, patch=patch, retry=retry, memo=memo, logger=logger, timer=True)

    @kopf.on.delete(*resource, registry=registry, id=f"{plural}-deleted")
    async def deleted(
        *, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int = 0, **_: Any
    ) -> None:
        await cleanup(body=body, retry=retry, memo=memo, logger=logger)
