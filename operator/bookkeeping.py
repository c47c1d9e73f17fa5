"""Where kopf keeps its bookkeeping on our objects, and how small it is.

Two problems with kopf's defaults under our own annotation prefix, both checked in kopf 1.45's
source (`_cogs/configs/diffbase.py`, `conventions.py`, `progress.py`):

- kopf drops from its diff every annotation under the prefix its storages use (it marks the
  prefix with `<prefix>/kopf-managed`, and the progress storage clears its prefix too). With that
  prefix set to `penguinmails.io`, `penguinmails.io/rotate-dkim` and the Campaign → Tenant nudge
  never made a change handler run. kopf's bookkeeping therefore lives under its own prefix,
  `kopf.penguinmails.io`, and our annotations are part of the diff again.
- kopf's diff base is a copy of the whole spec in one annotation, and all annotations together
  may not exceed 256 KiB: a legal 512 KiB Campaign template made every patch fail. Our
  controllers are level-based (they read the whole object, never kopf's field diffs), so all
  they need is *whether* something changed: the diff base is a SHA-256 digest of what kopf would
  have compared, 64 characters whatever the spec's size.

Objects written by earlier versions carry the old bookkeeping (`penguinmails.io/kopf-managed`,
`penguinmails.io/last-handled-configuration`, per-handler progress): the old diff base is read
once, so an upgrade does not re-run every handler, and every legacy key is removed with the
next bookkeeping write.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

PREFIX = "kopf.penguinmails.io"
"""kopf's own annotations (progress of a handler being retried, the diff-base digest)."""
DIFFBASE_KEY = "last-handled-digest"

LEGACY_PREFIX = "penguinmails.io"
LEGACY_DIFFBASE = f"{LEGACY_PREFIX}/last-handled-configuration"
# What kopf wrote under our prefix before: its marker, its diff base, its progress records
# (one per handler id, `<plural>-changed` / `<plural>-deleted`) and its touch key.
_LEGACY_NAME = re.compile(
    r"kopf-managed|last-handled-configuration|touch-dummy"
    r"|(tenants|smtpservers|sendingdomains|campaigns)-(changed|deleted)"
)


def is_bookkeeping(key: str) -> bool:
    """kopf's own annotation, current or legacy: never part of what a change is judged by."""
    prefix, _, name = key.partition("/")
    if prefix == PREFIX:
        return True
    return prefix == LEGACY_PREFIX and _LEGACY_NAME.fullmatch(name) is not None


def _without_bookkeeping(raw: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(raw)
    metadata = dict(body.get("metadata") or {})
    annotations = metadata.get("annotations") or {}
    metadata["annotations"] = {k: v for k, v in annotations.items() if not is_bookkeeping(k)}
    body["metadata"] = metadata
    return body


def progress_storage() -> kopf.AnnotationsProgressStorage:
    return kopf.AnnotationsProgressStorage(prefix=PREFIX)


class DigestDiffBaseStorage(kopf.DiffBaseStorage):
    """kopf's essence (spec, labels, annotations) reduced to its SHA-256 digest."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        raw = _without_bookkeeping(body)
        essence = super().build(body=kopf.Body(cast(kopf.RawBody, raw)), extra_fields=extra_fields)
        encoded = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
        return cast(kopf.BodyEssence, {"digest": hashlib.sha256(encoded.encode()).hexdigest()})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        annotations = body.metadata.annotations
        stored = annotations.get(f"{PREFIX}/{DIFFBASE_KEY}")
        if stored is not None:
            return cast(kopf.BodyEssence, {"digest": stored.strip()})
        legacy = annotations.get(LEGACY_DIFFBASE)
        if legacy is None:
            return None
        # The old diff base lacked our own annotations (kopf hid them): take their current
        # values as handled, so an upgrade re-runs nothing that had not changed.
        try:
            essence = dict(json.loads(legacy))
        except (ValueError, TypeError):
            return None
        ours = {
            k: v
            for k, v in annotations.items()
            if k.startswith(f"{LEGACY_PREFIX}/") and not is_bookkeeping(k)
        }
        metadata = dict(essence.get("metadata") or {})
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **ours}
        essence["metadata"] = metadata
        return self.build(body=kopf.Body(cast(kopf.RawBody, essence)))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        patch.metadata.annotations[f"{PREFIX}/{DIFFBASE_KEY}"] = str(
            cast(Mapping[str, Any], essence)["digest"]
        )
        for key in body.metadata.annotations:
            if key.startswith(f"{LEGACY_PREFIX}/") and is_bookkeeping(key):
                patch.metadata.annotations[key] = None
