"""The owner re-runs within seconds of one of its children being deleted or edited by someone
else: metadata-only watches of the children, which keep nothing per child.

Why not kopf's watches: kopf keeps a `ResourceMemory` for every object of a watched kind for as
long as it exists, runs a worker task per object while its events flow, and handles full
bodies (each Deployment's spec and `managedFields`); at 10,000 Tenants that is ≈100,000 objects
held for nothing (docs/scaling.md, Memory). What the repair needs is metadata only: the owner
label, the uid, `managedFields`. So one task per child kind lists and watches that kind by the
owner label, asking the API server for `PartialObjectMetadata` (the object's metadata alone),
and keeps only the last resource version and, per child with another manager's edit, that
edit (so each edit nudges once).

The decision per event is `decide` (pure): a deleted child nudges its owner; an edit by another
field manager (`foreign_edit`: a `kubectl edit` or `scale` takes the fields it changed from us;
a controller's annotation or status is not an edit) nudges once per entry. The nudge is the
annotation `nudge_annotation` on the owner, a merge patch naming the child (every value is new,
so each is a change for kopf, which runs the owner's change handler: operator/bookkeeping.py).
Nudges of one owner pending at once are sent as one (the pass it runs states every child).

The stream: a LIST (pages of `PAGE_SIZE`), then a WATCH from its resource version with
bookmarks (the resource version stays fresh while nothing changes, so a reconnect is one WATCH,
not a LIST). The server ends a watch after `WATCH_SERVER_SECONDS`; the client gives up on one
that sent nothing, not even a bookmark, for `INACTIVITY_SECONDS` (a silently stalled stream);
both reconnect from the last resource version. A 410 Gone (that version is compacted) lists
again, and a list nudges nothing: an object that merely still exists is no change. A child
deleted or edited in such a gap is caught by the owner's full-pass net
(`PM_FULL_RESYNC_SECONDS`). Errors reconnect with exponential backoff; every request has a
connect and a read timeout (no hung connection).

Started by a kopf startup handler (so only on the leader: standbys do not run kopf,
operator/leader.py), stopped at kopf's cleanup, like operator/resync_loop.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import kopf
from kubernetes import client

from penguinmails.common.settings import KubeClientSettings
from penguinmails.operator.errors import backoff_seconds
from penguinmails.operator.kube import FIELD_MANAGER, authorization, client_configuration

log = logging.getLogger(__name__)

LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PAGE_SIZE = 500
"""Objects per LIST page: a re-list of 10,000 children's metadata is read a page at a time
(each page is only recorded, so the next one is asked for at once, well within the lifetime
of the continue token)."""
WATCH_SERVER_SECONDS = 270
"""The API server ends each watch after this (as kopf's `settings.watching.server_timeout`)."""
INACTIVITY_SECONDS = 150.0
"""A watch that sent no line for this long is given up and re-opened from its resource version
(nothing is lost, the events are only later). The API server sends a bookmark about once a
minute, but only once its watch cache has moved past the version the watch started from: on
a kind nothing happens to, the first one can be skipped (seen against the real API server:
Deployments, idle, first bookmark after 150 s). Two and a half minutes is two chances."""
RECONNECT_MAX_SECONDS = 30.0
"""Longest wait between reconnections after errors (1 s, 2 s, 4 s ... then this): an API
server back from an outage is watched again soon, while the resource version is still kept."""
NUDGES_AT_ONCE = 4
"""Owner patches in flight at once (each a merge patch in the Kubernetes client's threads)."""


@dataclass(frozen=True)
class ChildKind:
    """A kind of child, watched cluster-wide by the owner label (and `name`, if set: the one
    object name per namespace RBAC lets the operator list and watch, as a field selector)."""

    group: str
    version: str
    plural: str
    kind: str
    name: str | None = None

    @property
    def path(self) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/{self.plural}"


@dataclass(frozen=True)
class Nudge:
    owner: str
    why: str
    """What happened, for the log: `Secret penguinmails-sender deleted`."""
    value: str
    """The annotation's value: names the child (and the edit), so each nudge is a change."""


@dataclass(frozen=True)
class Decision:
    nudge: Nudge | None
    edit: str | None
    """The child's current foreign edit, remembered until the next event of that child (None:
    forget the child)."""


def decide(
    kind: str, event: str, metadata: Mapping[str, Any], *, label: str, nudged_edit: str | None
) -> Decision:
    """What one watch event of a child means for its owner (named by the `label`'s value).
    `nudged_edit` is the edit of this child already nudged for (each edit nudges once)."""
    owner = (metadata.get("labels") or {}).get(label)
    name, uid = metadata.get("name", ""), metadata.get("uid", "")
    if event == "DELETED":
        # The value names the deleted child by uid: every deletion is a change for kopf.
        nudge = Nudge(owner, f"{kind} {name} deleted", f"{kind}/{name}/{uid}") if owner else None
        return Decision(nudge, None)
    edit = foreign_edit(metadata.get("managedFields") or [])
    if not owner or edit is None or edit == nudged_edit:
        return Decision(None, edit)
    why = f"{kind} {name} edited by {edit.split('@', 1)[0]}"
    return Decision(Nudge(owner, why, f"{kind}/{name}/{uid}/{edit}"), edit)


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


class GoneError(Exception):
    """410: the resource version (or continue token) is too old; list again."""


class StreamError(Exception):
    """The API server answered with an error (status or an ERROR event); reconnect later."""


Headers = Callable[[], Mapping[str, str]]
Sleep = Callable[[float], Awaitable[None]]


class ChildWatch:
    """LIST then WATCH of one child kind's metadata; `on_nudge` gets each nudge `decide` makes."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        child: ChildKind,
        *,
        label: str,
        on_nudge: Callable[[Nudge], None],
        headers: Headers = dict,
        timeouts: KubeClientSettings | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.child = child
        self._http = http
        self._label = label
        self._on_nudge = on_nudge
        self._headers = headers
        timeouts = timeouts or KubeClientSettings.from_env()
        connect = timeouts.connect_timeout_seconds
        # A page of metadata can take a while on a loaded API server: at least 60 s per read.
        self._list_timeout = httpx.Timeout(
            max(60.0, timeouts.read_timeout_seconds), connect=connect
        )
        self._watch_timeout = httpx.Timeout(INACTIVITY_SECONDS, connect=connect)
        self._sleep = sleep
        self._edits: dict[str, str] = {}
        """uid → the foreign edit already nudged for (children with such an edit only)."""
        self.resource_version: str | None = None

    def _params(self, **extra: str) -> dict[str, str]:
        params = {"labelSelector": self._label, **extra}
        if self.child.name:
            params["fieldSelector"] = f"metadata.name={self.child.name}"
        return params

    async def run(self) -> None:
        """List, watch, reconnect; until cancelled. Nothing ends it but cancellation: a
        watch that stopped for good would leave deleted children unrepaired until the
        full-pass net, while the operator looks healthy."""
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self.relist()
                if await self.watch_once():
                    failures = 0
                    continue
                # Not even a bookmark before the end: something between us and the API
                # server closes streams at once; do not reconnect in a tight loop.
                raise StreamError("the watch ended before its first line")
            except GoneError as error:
                listing = self.resource_version is None
                self.resource_version = None
                if not listing:
                    log.info("%s watch: resource version too old, listing again", self.child.kind)
                    continue
                failure: Exception = error  # the list's own continue token expired
            except (httpx.HTTPError, StreamError, ValueError) as error:
                failure = error
            except Exception as error:
                log.exception("%s watch failed", self.child.kind)
                failure = error
            delay = min(RECONNECT_MAX_SECONDS, backoff_seconds(failures, base=1.0))
            failures += 1
            log.warning("%s watch: %s; again in %.0f s", self.child.kind, _describe(failure), delay)
            await self._sleep(delay)

    async def relist(self) -> None:
        """Every child's current edit recorded, none nudged: existing is not changing. Objects
        deleted since the last list are forgotten."""
        edits: dict[str, str] = {}
        page: dict[str, str] = {"limit": str(PAGE_SIZE)}
        while True:
            response = await self._http.get(
                self.child.path,
                params=self._params(**page),
                headers={**self._headers(), "Accept": LIST_ACCEPT},
                timeout=self._list_timeout,
            )
            _raise_for(response.status_code, response.text)
            answer = response.json()
            for item in answer.get("items") or []:
                metadata = item.get("metadata") or {}
                edit = foreign_edit(metadata.get("managedFields") or [])
                if edit is not None:
                    edits[str(metadata.get("uid"))] = edit
            listed = answer.get("metadata") or {}
            if not listed.get("continue"):
                break
            page = {"limit": str(PAGE_SIZE), "continue": str(listed["continue"])}
        self._edits = edits
        self.resource_version = str(listed.get("resourceVersion") or "") or None

    async def watch_once(self) -> bool:
        """One watch from the last resource version, until the server ends it or it stalls
        (`INACTIVITY_SECONDS` without a line); False when it ended before its first line."""
        params = self._params(
            watch="true",
            allowWatchBookmarks="true",
            timeoutSeconds=str(WATCH_SERVER_SECONDS),
            resourceVersion=self.resource_version or "",
        )
        async with self._http.stream(
            "GET",
            self.child.path,
            params=params,
            headers={**self._headers(), "Accept": WATCH_ACCEPT},
            timeout=self._watch_timeout,
        ) as response:
            if response.status_code != 200:
                _raise_for(response.status_code, (await response.aread()).decode(errors="replace"))
            received = False
            try:
                async for line in response.aiter_lines():
                    if line.strip():
                        received = True
                        self.handle(json.loads(line))
            except httpx.ReadTimeout:
                # Stalled (or a bookmark late on a loaded API server): watched again at once
                # from the last resource version; no event is lost.
                log.info(
                    "%s watch: no line for %.0f s; watching again",
                    self.child.kind,
                    INACTIVITY_SECONDS,
                )
                return True
        return received

    def handle(self, event: Mapping[str, Any]) -> None:
        """One line of the watch stream."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            _raise_for(int(obj.get("code") or 500), str(obj.get("message") or ""))
        metadata = obj.get("metadata") or {}
        version = metadata.get("resourceVersion")
        if kind != "BOOKMARK":
            uid = str(metadata.get("uid"))
            decision = decide(
                self.child.kind,
                str(kind),
                metadata,
                label=self._label,
                nudged_edit=self._edits.get(uid),
            )
            if decision.edit is None:
                self._edits.pop(uid, None)
            else:
                self._edits[uid] = decision.edit
            if decision.nudge is not None:
                self._on_nudge(decision.nudge)
        if version:
            self.resource_version = str(version)


def _raise_for(status: int, message: str) -> None:
    if status == 410:
        raise GoneError(message)
    if status >= 400:
        # The Status's message is the API server's own text (no object content).
        raise StreamError(f"{status} {_status_message(message)}")


def _status_message(text: str) -> str:
    try:
        return str(json.loads(text).get("message") or "")[:200]
    except (ValueError, AttributeError):
        return text[:200]


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


Send = Callable[[str, str], Awaitable[object]]
"""Patch the owner by name with the annotation value."""


class Nudges:
    """Nudges waiting to be sent, at most one per owner (the latest), by `NUDGES_AT_ONCE`
    senders: a namespace deleted with its nine children is one patch of its Tenant, not nine,
    and a burst of events never waits for the API server's answers."""

    def __init__(self, owner_kind: str, send: Send) -> None:
        self._owner_kind = owner_kind
        self._send = send
        self._pending: dict[str, str] = {}
        self._owners: asyncio.Queue[str] = asyncio.Queue()

    def add(self, nudge: Nudge) -> None:
        log.info("%s; reconciling %s %s", nudge.why, self._owner_kind, nudge.owner)
        if nudge.owner not in self._pending:
            self._owners.put_nowait(nudge.owner)
        self._pending[nudge.owner] = nudge.value

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for _ in range(NUDGES_AT_ONCE):
                group.create_task(self._sender())

    async def _sender(self) -> None:
        while True:
            owner = await self._owners.get()
            value = self._pending.pop(owner)
            try:
                await self._send(owner, value)
            except Exception as error:  # the client retried; the full-pass net repairs it
                log.warning("nudging %s failed: %s", owner, _describe(error))


def http_client(configuration: client.Configuration) -> httpx.AsyncClient:
    """An HTTP client to the API server with the operator's credentials (kube.py): its CA
    and client certificate; the bearer token, if any, is read per request (`authorization`)
    so that a rotated service-account token is used. No proxy from the environment."""
    if configuration.verify_ssl:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return httpx.AsyncClient(base_url=configuration.host, verify=context, trust_env=False)


def watch_children(
    registry: kopf.OperatorRegistry,
    *,
    owner: tuple[str, str],
    label: str,
    nudge_annotation: str,
    children: Sequence[ChildKind],
) -> None:
    """Start one `ChildWatch` per kind with the operator (kopf's startup, so on the leader
    only), and the senders of their nudges; stop them at kopf's cleanup. `owner` is the owning
    kind's (apiVersion, kind), cluster-scoped, named by the `label`'s value."""
    api_version, owner_kind = owner

    @kopf.on.startup(registry=registry, id="child-watches-start")
    async def start(memo: kopf.Memo, **_: Any) -> None:
        configuration = await asyncio.to_thread(client_configuration)
        http = http_client(configuration)

        async def send(name: str, value: str) -> object:
            patch = {"metadata": {"annotations": {nudge_annotation: value}}}
            return await memo.context.kube.merge_patch(api_version, owner_kind, name, patch)

        nudges = Nudges(owner_kind, send)
        watches = [
            ChildWatch(
                http,
                child,
                label=label,
                on_nudge=nudges.add,
                headers=lambda: _bearer(configuration),
            )
            for child in children
        ]
        memo.child_watches = asyncio.create_task(_run_all(http, nudges, watches))

    @kopf.on.cleanup(registry=registry, id="child-watches-stop")
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = getattr(memo, "child_watches", None)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _bearer(configuration: client.Configuration) -> dict[str, str]:
    header = authorization(configuration)
    return {"Authorization": header} if header else {}


async def _run_all(http: httpx.AsyncClient, nudges: Nudges, watches: list[ChildWatch]) -> None:
    async with http, asyncio.TaskGroup() as group:
        group.create_task(nudges.run())
        for watch in watches:
            group.create_task(watch.run())
