"""kopf's bookkeeping: our own annotations count as changes, and the diff base stays tiny."""

from __future__ import annotations

import json
from typing import Any

import kopf

from penguinmails.operator.bookkeeping import (
    DIFFBASE_KEY,
    LEGACY_DIFFBASE,
    PREFIX,
    DigestDiffBaseStorage,
    is_bookkeeping,
    progress_storage,
)


def body(annotations: dict[str, str] | None = None, **spec: Any) -> kopf.Body:
    raw = {
        "apiVersion": "penguinmails.io/v1alpha1",
        "kind": "SendingDomain",
        "metadata": {"name": "d", "annotations": annotations or {}},
        "spec": {"domain": "example.test", **spec},
        "status": {"phase": "whatever"},
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


def essence(storage: DigestDiffBaseStorage, b: kopf.Body) -> Any:
    # What kopf itself does with it (processing.py): build, then the progress storage's clear.
    return progress_storage().clear(essence=storage.build(body=b))


def test_our_annotations_are_changes_and_kopfs_own_are_not() -> None:
    storage = DigestDiffBaseStorage()
    base = essence(storage, body())
    assert essence(storage, body({"penguinmails.io/rotate-dkim": "now"})) != base
    assert essence(storage, body({"penguinmails.io/active-campaigns": "1"})) != base
    for key in (
        f"{PREFIX}/sendingdomains-changed",
        f"{PREFIX}/{DIFFBASE_KEY}",
        "penguinmails.io/kopf-managed",
        "penguinmails.io/sendingdomains-changed",
        "kubectl.kubernetes.io/last-applied-configuration",
    ):
        assert essence(storage, body({key: "{}"})) == base, key
    # Status is not a change either; the spec is.
    assert essence(storage, body(zone="example.test")) != base


def test_diff_base_is_a_digest_whatever_the_spec_size() -> None:
    storage = DigestDiffBaseStorage()
    big = body(html="h" * 524288)
    patch = kopf.Patch()
    storage.store(body=big, patch=patch, essence=storage.build(body=big))
    stored = dict(patch["metadata"]["annotations"])
    assert list(stored) == [f"{PREFIX}/{DIFFBASE_KEY}"]
    assert len(stored[f"{PREFIX}/{DIFFBASE_KEY}"]) == 64
    annotated = body(stored, html="h" * 524288)
    assert storage.fetch(body=annotated) == storage.build(body=annotated)


def test_legacy_diff_base_is_read_once_and_legacy_keys_removed() -> None:
    # What kopf stored under our prefix before: the essence without our own annotations.
    legacy_essence = {"spec": {"domain": "example.test"}}
    annotations = {
        LEGACY_DIFFBASE: json.dumps(legacy_essence),
        "penguinmails.io/kopf-managed": "yes",
        "penguinmails.io/rotate-dkim": "already-seen-by-the-timer",
    }
    storage = DigestDiffBaseStorage()
    upgraded = body(annotations)
    # Unchanged since the old operator handled it: no handler runs again after the upgrade.
    assert storage.fetch(body=upgraded) == storage.build(body=upgraded)
    patch = kopf.Patch()
    storage.store(body=upgraded, patch=patch, essence=storage.build(body=upgraded))
    written = patch["metadata"]["annotations"]
    assert written[LEGACY_DIFFBASE] is None and written["penguinmails.io/kopf-managed"] is None
    assert "penguinmails.io/rotate-dkim" not in written
    # A spec change made since is still seen.
    assert storage.fetch(body=body(annotations, zone="x")) != storage.build(
        body=body(annotations, zone="x")
    )


def test_bookkeeping_keys() -> None:
    assert is_bookkeeping(f"{PREFIX}/anything")
    assert is_bookkeeping("penguinmails.io/tenants-changed")
    assert not is_bookkeeping("penguinmails.io/rotate-dkim")
    assert not is_bookkeeping("penguinmails.io/active-campaigns")
    assert not is_bookkeeping("penguinmails.io/cleanup")
