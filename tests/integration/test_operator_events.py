"""Event paths the controllers rely on, through the operator process at production timers.

Other modules shorten the resync and DNS timers to seconds, which would hide a change that
never reaches a handler: here the DNS tick and verify interval keep their defaults and the
resync is longer than production's, so whatever happens, happens because of the change itself.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from penguinmails.api.v1alpha1.campaign import CampaignSpec
from penguinmails.common.dkim.keys import load_keys_from_secret
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.operator import bookkeeping
from penguinmails.operator.campaign import ACTIVE_ANNOTATION
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_sendingdomain import ZONE, domain_body, tsig_secret

pytestmark = pytest.mark.integration

# The production resync (PM_RESYNC_SECONDS default): a change must act sooner than that.
PRODUCTION_RESYNC_SECONDS = 60.0
# The default verify interval of a SendingDomain (10 minutes): the only timer that would start
# a rotation by itself.
DEFAULT_VERIFY_SECONDS = 600.0
DIFFBASE_SUFFIXES = (f"/{bookkeeping.DIFFBASE_KEY}", "/last-handled-configuration")


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    with KnotServer(tmp_path_factory.mktemp("knot"), zones={ZONE: minimal_zone(ZONE)}) as server:
        yield server


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, knot: KnotServer) -> Iterator[OperatorProcess]:
    # Default DNS tick and verify interval; a resync ten times production's, so a timer can
    # never be what made a test pass. A 1 s record TTL only shortens how long new DKIM keys
    # wait in DNS before they sign (not a timer of the paths under test).
    handle = operator_process(
        PM_RESYNC_SECONDS=str(PRODUCTION_RESYNC_SECONDS * 10),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()


@pytest.fixture()
def namespace(
    core: client.CoreV1Api, custom_objects: client.CustomObjectsApi, operator: OperatorProcess
) -> Iterator[str]:
    name = f"ev-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    for plural in ("sendingdomains", "campaigns"):
        custom_objects.delete_collection_namespaced_custom_object(GROUP, VERSION, name, plural)
        wait_for(
            lambda p=plural: (
                not custom_objects.list_namespaced_custom_object(  # type: ignore[misc]
                    GROUP, VERSION, name, p
                )["items"]
            ),
            timeout=60,
            what=f"{plural} in {name} deleted",
        )
    core.delete_namespace(name)


def conditions_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def test_rotate_dkim_annotation_starts_a_rotation_at_once(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    domain = f"{namespace}.{ZONE}"
    tsig_secret(core, namespace, knot.tsig.secret)
    body = domain_body("main", domain, knot)
    del body["spec"]["verifyInterval"]  # the default, 10 minutes
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sendingdomains", body
    )

    def get() -> dict[str, Any]:
        return dict(
            custom_objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "sendingdomains", "main"
            )
        )

    def is_ready() -> dict[str, Any] | None:
        obj = get()
        return obj if conditions_of(obj).get("Ready", {}).get("status") == "True" else None

    ready = wait_for(is_ready, timeout=120, what="SendingDomain Ready")
    before = {s["selector"] for s in ready["status"]["dkim"]["selectors"]}
    assert before

    custom_objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "sendingdomains",
        "main",
        {"metadata": {"annotations": {"penguinmails.io/rotate-dkim": "now"}}},
    )

    def new_keys() -> set[str]:
        data = core.read_namespaced_secret("main-dkim", namespace).data
        return {key.selector for key in load_keys_from_secret(data)} - before

    # Today's code starts it from the annotation at once; before, only the verify interval
    # (10 minutes) would have. Waiting a fifth of that cannot be a timer's doing.
    added = wait_for(
        new_keys, timeout=DEFAULT_VERIFY_SECONDS / 5, what="new DKIM keys after rotate-dkim"
    )
    assert len(added) == len(before)  # one new key per algorithm


def test_campaign_nudge_scales_the_sender_without_a_resync(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    apps: client.AppsV1Api,
) -> None:
    name = f"nudge-{secrets.token_hex(3)}"
    namespace = f"tenant-{name}"
    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"tier": "starter", "contactEmail": f"ops@{name}.example.com"},
        },
    )
    try:
        wait_for(
            lambda: (
                (custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name))
                .get("status", {})
                .get("senderReplicas")
                == 0
            ),
            timeout=60,
            what="Tenant reconciled with the sender at 0",
        )
        # A Campaign its controller has handled (preflight fails: no SendingDomain here), then
        # marked Sending through the status subresource. A status write is not a change for
        # kopf, so nothing but the nudge can make the Tenant controller count it.
        custom_objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "campaigns",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Campaign",
                "metadata": {"name": "hello"},
                "spec": {
                    "sendingDomainRef": {"name": "missing"},
                    "from": {"address": "jane@example.test"},
                    "subject": "Hello",
                    "text": "Hi.",
                    "audience": {"lists": ["leads"]},
                },
            },
        )

        def campaign() -> dict[str, Any]:
            return dict(
                custom_objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "campaigns", "hello"
                )
            )

        def handled_once() -> dict[str, Any] | None:
            obj = campaign()
            annotations = obj["metadata"].get("annotations") or {}
            pending = (obj.get("status") or {}).get("phase") == "Pending"
            # kopf stores its diff base last, once the change is handled (the suffix of today's
            # key and of the one before kopf's bookkeeping moved, so this runs on both).
            stored = any(k.endswith(DIFFBASE_SUFFIXES) for k in annotations)
            return obj if pending and stored else None

        handled = wait_for(handled_once, timeout=60, what="the Campaign handled once")
        custom_objects.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "campaigns",
            "hello",
            {"status": {"phase": "Sending"}},
        )
        # What the Campaign controller does when a campaign starts (`_nudge_tenant`).
        custom_objects.patch_cluster_custom_object(
            GROUP,
            VERSION,
            "tenants",
            name,
            {"metadata": {"annotations": {ACTIVE_ANNOTATION: "1"}}},
        )
        wait_for(
            lambda: (
                apps.read_namespaced_deployment("penguinmails-sender", namespace).spec.replicas == 1
            ),
            timeout=PRODUCTION_RESYNC_SECONDS,
            what="the sender scaled to 1 by the nudge",
        )
        assert handled["metadata"]["generation"] == campaign()["metadata"]["generation"]
    finally:
        custom_objects.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "campaigns", "hello"
        )
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        wait_for(
            lambda: all(
                t["metadata"]["name"] != name
                for t in custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")[
                    "items"
                ]
            ),
            timeout=60,
            what=f"Tenant {name} deleted",
        )


def test_largest_campaign_the_crd_allows_is_handled(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    fields = CampaignSpec.model_fields
    text_max = next(m.max_length for m in fields["text"].metadata if hasattr(m, "max_length"))
    html_max = next(m.max_length for m in fields["html"].metadata if hasattr(m, "max_length"))
    spec = {
        "sendingDomainRef": {"name": "missing"},
        "from": {"address": "jane@example.test"},
        "subject": "Hello",
        "text": "t" * text_max,
        "html": "<p>" + "h" * (html_max - 7) + "</p>",
        "audience": {"lists": ["leads"]},
    }
    custom_objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "campaigns",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Campaign",
            "metadata": {"name": "big"},
            "spec": spec,
        },
    )

    def observed(generation: int) -> dict[str, Any] | None:
        obj = dict(
            custom_objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns", "big"
            )
        )
        status = obj.get("status") or {}
        return obj if status.get("observedGeneration") == generation else None

    first = wait_for(lambda: observed(1), timeout=60, what="the big Campaign's first status")
    assert conditions_of(first)["Preflight"]["status"] == "False"
    # A change is seen too: the bookkeeping did not make every later patch fail.
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "campaigns", "big", {"spec": {"paused": True}}
    )
    second = wait_for(lambda: observed(2), timeout=60, what="the big Campaign's second status")
    annotations = second["metadata"].get("annotations") or {}
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 1024, json.dumps(annotations)


def test_deleted_or_edited_children_are_repaired_without_a_resync(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    name = f"repair-{secrets.token_hex(3)}"
    namespace = f"tenant-{name}"
    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"tier": "starter", "contactEmail": f"ops@{name}.example.com"},
        },
    )

    def uids() -> tuple[str, str] | None:
        try:
            deployment = apps.read_namespaced_deployment("penguinmails-sender", namespace)
            quota = core.read_namespaced_resource_quota("penguinmails-tier", namespace)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return str(deployment.metadata.uid), str(quota.metadata.uid)

    try:
        before = wait_for(uids, timeout=60, what="the Tenant's sender and quota")
        apps.delete_namespaced_deployment("penguinmails-sender", namespace)
        core.delete_namespaced_resource_quota("penguinmails-tier", namespace)
        # Both recreated (new uids), sooner than the production resync would have.
        after = wait_for(
            lambda: (u := uids()) and u[0] != before[0] and u[1] != before[1] and u,
            timeout=PRODUCTION_RESYNC_SECONDS,
            what="the deleted sender Deployment and quota recreated",
        )
        assert after
        # Edited by another manager: a `kubectl edit` of the quota, a `kubectl scale` of the
        # sender (nothing is sending: the operator keeps it at 0). Undone from the children's
        # watch, since a resync no longer re-applies what it applied before (tenant.Resyncs).
        quota = core.read_namespaced_resource_quota("penguinmails-tier", namespace)
        wanted = dict(quota.spec.hard)
        quota.spec.hard = {**wanted, "pods": "99"}
        core.replace_namespaced_resource_quota("penguinmails-tier", namespace, quota)
        apps.patch_namespaced_deployment_scale(
            "penguinmails-sender", namespace, {"spec": {"replicas": 3}}
        )

        def drift() -> list[str]:
            hard = core.read_namespaced_resource_quota("penguinmails-tier", namespace).spec.hard
            scale = apps.read_namespaced_deployment_scale("penguinmails-sender", namespace)
            return [
                *(f"quota {k}={v}" for k, v in dict(hard).items() if wanted.get(k) != v),
                *([f"replicas={scale.spec.replicas}"] if scale.spec.replicas else []),
            ]

        left: list[str] = []

        def repaired() -> bool:
            left[:] = drift()
            return not left

        try:
            wait_for(repaired, timeout=PRODUCTION_RESYNC_SECONDS, what="quota and scale repaired")
        except AssertionError as error:
            raise AssertionError(f"{error}; still drifted: {left}") from None
    finally:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        wait_for(
            lambda: all(
                t["metadata"]["name"] != name
                for t in custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")[
                    "items"
                ]
            ),
            timeout=60,
            what=f"Tenant {name} deleted",
        )
