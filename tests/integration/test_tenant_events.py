"""A Tenant's events say what changed, once: one per condition transition (and a tier change),
none per pass, through the real operator process. The resync here is the conftest's 3 s, so
a pass that posted anything would post it many times over in the windows watched."""

from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_tenant_operator import tenant_body, wait_ready

pytestmark = pytest.mark.integration

RESYNC_SECONDS = 3.0  # the conftest's
PASSES = 4
"""Resyncs watched after each change: any event per pass would show this many times."""


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory) -> Iterator[OperatorProcess]:
    handle = operator_process()
    yield handle
    handle.stop()
    handle.assert_no_errors()


def events_of(core: client.CoreV1Api, uid: str) -> collections.Counter[tuple[str, str]]:
    found = core.list_event_for_all_namespaces(field_selector=f"involvedObject.uid={uid}").items
    return collections.Counter((event.type, event.reason) for event in found)


def settled(core: client.CoreV1Api, uid: str) -> collections.Counter[tuple[str, str]]:
    """The events after several resyncs in which nothing changed."""
    time.sleep(PASSES * RESYNC_SECONDS)
    return events_of(core, uid)


def test_events_only_on_transitions(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    name = f"ev-{secrets.token_hex(3)}"
    created = custom_objects.create_cluster_custom_object(
        GROUP, VERSION, "tenants", tenant_body(name, "starter")
    )
    uid = created["metadata"]["uid"]
    try:
        wait_ready(custom_objects, name)
        # Ready, SendersScheduled and Suspended appeared: one event each, and nothing else
        # (no "handler succeeded" per pass).
        first = {("Normal", "Reconciled"): 1, ("Normal", "NoSenders"): 1, ("Normal", "Active"): 1}
        assert settled(core, uid) == first

        custom_objects.patch_cluster_custom_object(
            GROUP, VERSION, "tenants", name, {"spec": {"suspended": True}}
        )
        wait_for(
            lambda: events_of(core, uid)[("Normal", "SuspendedBySpec")],
            what="the suspension's event",
        )
        assert settled(core, uid) == {**first, ("Normal", "SuspendedBySpec"): 1}

        custom_objects.patch_cluster_custom_object(
            GROUP, VERSION, "tenants", name, {"spec": {"suspended": False, "tier": "business"}}
        )
        wait_for(
            lambda: events_of(core, uid)[("Normal", "TierChanged")],
            what="the tier change's event",
        )
        assert settled(core, uid) == {
            **first,
            ("Normal", "SuspendedBySpec"): 1,
            ("Normal", "Active"): 2,
            ("Normal", "TierChanged"): 1,
        }
    finally:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        wait_for(
            lambda: (
                name
                not in {
                    t["metadata"]["name"]
                    for t in custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")[
                        "items"
                    ]
                }
            ),
            timeout=120,
            what=f"Tenant {name} deleted",
        )
