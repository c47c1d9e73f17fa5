"""Waiting for thousands of objects to reach a state without loading what is measured.

A bench that lists every object each second to count the Ready ones makes the API server
serialize (and itself parse) all of them each time: at 2,000 SendingDomains that is megabytes a
second on the same two cores the operator is measured on. `Tally` lists once and then follows a
WATCH from that list's resourceVersion, keeping one small summary per object, so the API server
only sends what changed. A watch that ends (its timeout, a dropped connection) resumes from the
last version seen; one that is too old (410 Gone) lists again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

Summary = TypeVar("Summary")

WATCH_SECONDS = 60
"""How long one watch request lasts before it is opened again from its last version."""


class Tally(Generic[Summary]):
    """The summary of every object of one custom resource (in a namespace or cluster-wide),
    kept current by one LIST and a WATCH. `summarize` returns None for an object to ignore."""

    def __init__(
        self,
        api: client.CustomObjectsApi,
        group: str,
        version: str,
        plural: str,
        summarize: Callable[[Mapping[str, Any]], Summary | None],
        *,
        namespace: str | None = None,
    ) -> None:
        self.api = api
        self.args: tuple[str, ...] = (
            (group, version, namespace, plural) if namespace else (group, version, plural)
        )
        self.list = (
            api.list_namespaced_custom_object if namespace else api.list_cluster_custom_object
        )
        self.summarize = summarize
        self.summaries: dict[str, Summary] = {}
        self.version: str | None = None

    def wait(self, finished: Callable[[dict[str, Summary]], bool], timeout: float) -> bool:
        """Follow changes until `finished(summaries)` or `timeout` seconds; whether it finished."""
        deadline = time.monotonic() + timeout
        while True:
            if self.version is None and not self._relist():
                time.sleep(1.0)
            if finished(self.summaries):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.version is not None and self._follow(finished, remaining):
                return True

    def _relist(self) -> bool:
        try:
            listing = self.list(*self.args)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            # A loaded API server times a large list out (504) or drops it: list again.
            if isinstance(error, ApiException) and (error.status or 0) < 500:
                raise
            return False
        self.summaries = {}
        for item in listing["items"]:
            self._keep(item)
        self.version = listing["metadata"]["resourceVersion"]
        return True

    def _follow(self, finished: Callable[[dict[str, Summary]], bool], remaining: float) -> bool:
        stream = watch.Watch()
        try:
            for event in stream.stream(
                self.list,
                *self.args,
                resource_version=self.version,
                allow_watch_bookmarks=True,
                timeout_seconds=max(1, int(min(WATCH_SECONDS, remaining))),
                # Not `deserialize=False`: the client then fails on an ERROR event (it reads
                # `raw_object`, which only deserializing sets) instead of raising 410 Gone.
            ):
                item = event["raw_object"]
                self.version = item["metadata"]["resourceVersion"]
                if event["type"] == "DELETED":
                    self.summaries.pop(item["metadata"]["name"], None)
                elif event["type"] != "BOOKMARK":
                    self._keep(item)
                if finished(self.summaries):
                    stream.stop()
                    return True
        except ApiException as error:
            if error.status == 410:  # too old to resume: the state again from a list
                self.version = None
            elif (error.status or 0) < 500:
                raise
        except urllib3.exceptions.HTTPError:
            pass  # the connection dropped: resume from the last version seen
        return False

    def _keep(self, item: Mapping[str, Any]) -> None:
        name = item["metadata"]["name"]
        summary = self.summarize(item)
        if summary is None:
            self.summaries.pop(name, None)
        else:
            self.summaries[name] = summary


def has_condition(item: Mapping[str, Any], kind: str) -> bool:
    """Whether the object's status has condition `kind` with status True."""
    conditions = (item.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)
