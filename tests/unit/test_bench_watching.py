"""The benches' `Tally`: one LIST, then a WATCH from its version, against a scripted API."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from penguinmails.bench.watching import Tally, has_condition


def domain(name: str, version: int, *, verified: bool) -> dict[str, Any]:
    status = "True" if verified else "False"
    return {
        "metadata": {"name": name, "resourceVersion": str(version)},
        "status": {"conditions": [{"type": "DNSVerified", "status": status}]},
    }


def event(kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": item}


GONE: dict[str, Any] = {
    "type": "ERROR",
    "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
}


class Stream:
    """A watch response as urllib3 gives it: JSON lines, in chunks."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.body = "".join(json.dumps(e) + "\n" for e in events).encode()
        self.status = 200

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        yield from (self.body[i : i + 7] for i in range(0, len(self.body), 7))

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class ScriptedApi:
    """`list_namespaced_custom_object`: each call without `watch` answers the next listing,
    each watch the next list of events; records the versions watches started from."""

    def __init__(self, listings: list[list[dict[str, Any]]], watches: list[list[dict[str, Any]]]):
        self.listings, self.watches = listings, watches
        self.lists = 0
        self.watched_from: list[str | None] = []

    def list_namespaced_custom_object(self, *args: str, **kwargs: Any) -> Any:
        """:return: object"""
        if kwargs.get("watch"):
            self.watched_from.append(kwargs.get("resource_version"))
            return Stream(self.watches.pop(0))
        self.lists += 1
        items = self.listings.pop(0)
        version = max((int(i["metadata"]["resourceVersion"]) for i in items), default=1)
        return {"items": items, "metadata": {"resourceVersion": str(version)}}


def tally(api: ScriptedApi) -> Tally[bool]:
    def verified(item: Mapping[str, Any]) -> bool | None:
        return True if has_condition(item, "DNSVerified") else None

    return Tally(api, "g", "v1", "things", verified, namespace="ns")


def test_lists_once_then_follows_the_watch_from_the_lists_version() -> None:
    api = ScriptedApi(
        listings=[[domain("a", 5, verified=True), domain("b", 6, verified=False)]],
        watches=[
            [
                event("BOOKMARK", {"metadata": {"resourceVersion": "8"}}),
                event("MODIFIED", domain("b", 9, verified=True)),
                event("ADDED", domain("c", 10, verified=False)),
            ],
            [
                event("DELETED", domain("a", 11, verified=True)),
                event("ADDED", domain("c", 12, verified=True)),
            ],
        ],
    )
    seen = tally(api)
    assert seen.wait(lambda found: set(found) == {"b", "c"}, timeout=5)
    assert api.lists == 1
    # The second watch resumed where the first ended (its last event), not from the list.
    assert api.watched_from == ["6", "10"]


def test_a_watch_too_old_to_resume_lists_again() -> None:
    """410 Gone arrives as an ERROR event inside the watch's 200 answer."""
    api = ScriptedApi(
        listings=[[domain("a", 5, verified=False)], [domain("a", 20, verified=True)]],
        watches=[[GONE]],
    )
    seen = tally(api)
    assert seen.wait(lambda found: "a" in found, timeout=5)
    assert api.lists == 2
    assert api.watched_from == ["5"]


def test_a_refusal_is_not_retried() -> None:
    api = ScriptedApi(
        listings=[[]], watches=[[{**GONE, "object": {**GONE["object"], "code": 403}}]]
    )
    with pytest.raises(ApiException) as refused:
        tally(api).wait(lambda found: bool(found), timeout=5)
    assert refused.value.status == 403
