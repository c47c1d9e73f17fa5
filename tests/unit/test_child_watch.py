"""The children's metadata watch (operator/child_watch.py): the decision per event, table-driven,
and the LIST/WATCH stream against a scripted API server (httpx's transport for tests): the
metadata-only requests, bookmarks, resuming from the last resource version, 410 Gone → a new
list that nudges nothing, errors → backoff. The real API server and operator process:
tests/integration/test_operator_events.py and test_tenant_sender_secret_watch.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from penguinmails.common.settings import KubeClientSettings
from penguinmails.operator.child_watch import (
    LIST_ACCEPT,
    PAGE_SIZE,
    WATCH_ACCEPT,
    ChildKind,
    ChildWatch,
    Decision,
    Nudge,
    Nudges,
    decide,
)
from penguinmails.operator.kube import FIELD_MANAGER

LABEL = "penguinmails.io/tenant"
OURS = {"manager": FIELD_MANAGER, "time": "2026-12-01T10:00:00Z", "fieldsV1": {"f:spec": {}}}
EDIT = {"manager": "kubectl-edit", "time": "2026-12-01T10:05:00Z", "fieldsV1": {"f:spec": {}}}
LATER = {**EDIT, "time": "2026-12-01T10:09:00Z"}
STATUS = {
    "manager": "kube-controller-manager",
    "time": "2026-12-01T10:06:00Z",
    "subresource": "status",
    "fieldsV1": {"f:status": {}},
}


def meta(*fields: dict[str, Any], owner: str | None = "acme", uid: str = "u1") -> dict[str, Any]:
    labels = {LABEL: owner} if owner else {}
    return {"name": "quota", "uid": uid, "labels": labels, "managedFields": list(fields)}


@pytest.mark.parametrize(
    ("event", "metadata", "nudged", "expected"),
    [
        pytest.param(
            "DELETED",
            meta(OURS),
            None,
            Decision(Nudge("acme", "ResourceQuota quota deleted", "ResourceQuota/quota/u1"), None),
            id="deleted: nudge, forget the child",
        ),
        pytest.param(
            "DELETED",
            meta(OURS, EDIT),
            "kubectl-edit@2026-12-01T10:05:00Z",
            Decision(Nudge("acme", "ResourceQuota quota deleted", "ResourceQuota/quota/u1"), None),
            id="deleted after an edit: nudge, forget the edit",
        ),
        pytest.param(
            "DELETED", meta(OURS, owner=None), None, Decision(None, None), id="no owner label"
        ),
        pytest.param("ADDED", meta(OURS), None, Decision(None, None), id="created by us"),
        pytest.param(
            "MODIFIED", meta(OURS, STATUS), None, Decision(None, None), id="a controller's status"
        ),
        pytest.param(
            "MODIFIED",
            meta(OURS, EDIT),
            None,
            Decision(
                Nudge(
                    "acme",
                    "ResourceQuota quota edited by kubectl-edit",
                    "ResourceQuota/quota/u1/kubectl-edit@2026-12-01T10:05:00Z",
                ),
                "kubectl-edit@2026-12-01T10:05:00Z",
            ),
            id="edited by another manager: nudge, remember the edit",
        ),
        pytest.param(
            "MODIFIED",
            meta(OURS, EDIT, STATUS),
            "kubectl-edit@2026-12-01T10:05:00Z",
            Decision(None, "kubectl-edit@2026-12-01T10:05:00Z"),
            id="the same edit again: once only",
        ),
        pytest.param(
            "MODIFIED",
            meta(OURS, LATER),
            "kubectl-edit@2026-12-01T10:05:00Z",
            Decision(
                Nudge(
                    "acme",
                    "ResourceQuota quota edited by kubectl-edit",
                    "ResourceQuota/quota/u1/kubectl-edit@2026-12-01T10:09:00Z",
                ),
                "kubectl-edit@2026-12-01T10:09:00Z",
            ),
            id="a later edit by the same manager: nudge again",
        ),
        pytest.param(
            "MODIFIED",
            meta(OURS),
            "kubectl-edit@2026-12-01T10:05:00Z",
            Decision(None, None),
            id="repaired: the edit's entry gone, forget it",
        ),
        pytest.param(
            "MODIFIED",
            meta(OURS, EDIT, owner=None),
            None,
            Decision(None, "kubectl-edit@2026-12-01T10:05:00Z"),
            id="edited, but no owner to nudge",
        ),
    ],
)
def test_decide(
    event: str, metadata: dict[str, Any], nudged: str | None, expected: Decision
) -> None:
    assert decide("ResourceQuota", event, metadata, label=LABEL, nudged_edit=nudged) == expected


def line(kind: str, metadata: dict[str, Any]) -> bytes:
    obj = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def item(version: str, *fields: dict[str, Any], uid: str = "u1") -> dict[str, Any]:
    return {**meta(*fields, uid=uid), "resourceVersion": version}


GONE = json.dumps(
    {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "message": "too old resource version: 5 (9)"},
    }
).encode()


Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


@dataclass
class ApiServer:
    """Answers each request with the next scripted response; records the requests."""

    answers: list[Answer]
    requests: list[httpx.Request] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            self.done.set()
            await asyncio.Event().wait()  # the last watch hangs until the test cancels
        answer = self.answers.pop(0)
        return answer if isinstance(answer, httpx.Response) else answer(request)


def listing(version: str, *items: dict[str, Any], more: str = "") -> httpx.Response:
    body = {
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": version, **({"continue": more} if more else {})},
        "items": [{"metadata": i} for i in items],
    }
    return httpx.Response(200, json=body)


def streaming(*chunks: bytes, stall: bool = False) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        if stall:  # what the client's read timeout raises when no line comes
            raise httpx.ReadTimeout("no line")

    return httpx.Response(200, content=body())


async def run_against(server: ApiServer, child: ChildKind) -> tuple[list[Nudge], list[float]]:
    nudges: list[Nudge] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    http = httpx.AsyncClient(base_url="https://api.test", transport=httpx.MockTransport(server))
    watch = ChildWatch(
        http,
        child,
        label=LABEL,
        on_nudge=nudges.append,
        timeouts=KubeClientSettings(connect_timeout_seconds=1, read_timeout_seconds=1, retries=0),
        sleep=sleep,
    )
    task = asyncio.create_task(watch.run())
    await asyncio.wait_for(server.done.wait(), timeout=30)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await http.aclose()
    return nudges, slept


QUOTAS = ChildKind("", "v1", "resourcequotas", "ResourceQuota")


async def test_list_then_watch_metadata_resuming_from_bookmarks_and_relisting_on_gone() -> None:
    server = ApiServer(
        [
            # An existing child already edited by someone else: listed, not nudged.
            listing("5", item("4", OURS, EDIT)),
            streaming(
                line("MODIFIED", item("6", OURS, EDIT, STATUS)),  # the same edit: no nudge
                line("ADDED", item("7", OURS, uid="u2")),  # created by us: no nudge
                line("BOOKMARK", {"resourceVersion": "8"}),
            ),
            # The server ended the watch: resumed from the bookmark, no list.
            streaming(
                line("MODIFIED", item("9", OURS, EDIT, uid="u2")),  # edited: nudged
                line("DELETED", item("10", OURS)),  # deleted: nudged
                line("BOOKMARK", {"resourceVersion": "11"}),
                GONE,  # compacted meanwhile
            ),
            # Listed again: u2 still carries the edit already nudged, and u3 one made in the
            # gap; existing is not a change, so neither nudges.
            listing("20", item("9", OURS, EDIT, uid="u2"), item("15", OURS, LATER, uid="u3")),
            streaming(
                line("MODIFIED", item("21", OURS, LATER, STATUS, uid="u3")),  # still no nudge
                line("MODIFIED", item("22", OURS, EDIT, LATER, uid="u2")),  # a later edit: nudged
            ),
        ]
    )
    nudges, slept = await run_against(server, QUOTAS)

    assert [n.why for n in nudges] == [
        "ResourceQuota quota edited by kubectl-edit",
        "ResourceQuota quota deleted",
        "ResourceQuota quota edited by kubectl-edit",
    ]
    assert [n.value for n in nudges] == [
        "ResourceQuota/quota/u2/kubectl-edit@2026-12-01T10:05:00Z",
        "ResourceQuota/quota/u1",
        "ResourceQuota/quota/u2/kubectl-edit@2026-12-01T10:09:00Z",
    ]
    assert slept == []  # no error: no backoff
    kinds = [
        ("list" if "watch" not in r.url.params else "watch", r.url.params.get("resourceVersion"))
        for r in server.requests
    ]
    # The last watch (hanging) resumed from the last event's version.
    assert kinds == [
        ("list", None),
        ("watch", "5"),
        ("watch", "8"),
        ("list", None),
        ("watch", "20"),
        ("watch", "22"),
    ]
    for request in server.requests:
        assert request.url.path == "/api/v1/resourcequotas"
        assert request.url.params["labelSelector"] == LABEL
        assert "fieldSelector" not in request.url.params
        if "watch" in request.url.params:
            assert request.headers["Accept"] == WATCH_ACCEPT
            assert request.url.params["allowWatchBookmarks"] == "true"
            assert int(request.url.params["timeoutSeconds"]) > 0
        else:
            assert request.headers["Accept"] == LIST_ACCEPT
            assert request.url.params["limit"] == str(PAGE_SIZE)


async def test_a_list_in_pages_a_named_kind_and_errors_back_off() -> None:
    secrets = ChildKind("", "v1", "secrets", "Secret", name="penguinmails-sender")
    server = ApiServer(
        [
            httpx.Response(503, json={"kind": "Status", "code": 503, "message": "busy"}),
            listing("4", item("3", OURS), more="token-0"),
            # The continue token expired between pages: the list starts again, after a
            # backoff (a list that keeps failing so is no tight loop).
            httpx.Response(410, json={"kind": "Status", "code": 410, "message": "expired"}),
            listing("5", item("3", OURS), more="token-1"),
            listing("5", item("4", OURS, EDIT, uid="u2")),
            # The watch itself refused, then an ERROR event other than Gone: both retried from
            # the same version after a backoff, without a new list.
            httpx.Response(500, json={"kind": "Status", "code": 500, "message": "etcd down"}),
            streaming(
                json.dumps(
                    {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "x"}}
                ).encode()
            ),
            # A stalled stream: watched again at once (no backoff) from its last version.
            streaming(line("MODIFIED", item("6", OURS, EDIT, STATUS, uid="u2")), stall=True),
        ]
    )
    nudges, slept = await run_against(server, secrets)

    assert nudges == []  # u2's edit was listed, not made while watching
    assert len(slept) == 4 and slept == sorted(slept) and slept[0] < slept[-1]
    pages = [r.url.params.get("continue") for r in server.requests if "watch" not in r.url.params]
    assert pages == [None, None, "token-0", None, "token-1"]
    versions = [r.url.params["resourceVersion"] for r in server.requests if "watch" in r.url.params]
    assert versions == ["5", "5", "5", "6"]
    for request in server.requests:
        assert request.url.params["fieldSelector"] == "metadata.name=penguinmails-sender"


async def test_nudges_of_one_owner_pending_at_once_are_sent_as_one() -> None:
    sent: list[tuple[str, str]] = []
    release = asyncio.Event()

    async def send(owner: str, value: str) -> None:
        await release.wait()
        sent.append((owner, value))

    nudges = Nudges("Tenant", send)
    runner = asyncio.create_task(nudges.run())
    await asyncio.sleep(0)
    # Four senders take the first four owners' nudges; what arrives meanwhile waits.
    for owner in ("a", "b", "c", "d"):
        nudges.add(Nudge(owner, f"{owner} deleted", f"{owner}-1"))
    await asyncio.sleep(0)
    for kind in ("Deployment", "ResourceQuota", "Namespace"):
        nudges.add(Nudge("e", f"{kind} deleted", f"e-{kind}"))
    nudges.add(Nudge("a", "a again", "a-2"))
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert sorted(sent) == [
        ("a", "a-1"),
        ("a", "a-2"),
        ("b", "b-1"),
        ("c", "c-1"),
        ("d", "d-1"),
        ("e", "e-Namespace"),
    ]
