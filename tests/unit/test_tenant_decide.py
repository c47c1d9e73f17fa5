"""The Tenant controller on the framework: `decide` (pure, table-driven) and whole passes with a
fake clock, a fake API client and a fake send counter (the real API server, database and
sender are in tests/integration/test_tenant_*.py)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from kopf._core.engines import posting

from penguinmails.api.v1alpha1 import TenantSpec
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.context import Context
from penguinmails.operator.controller import Logger
from penguinmails.operator.errors import ReconcileError
from penguinmails.operator.tenant import Stated, TenantController, decide

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FULL_EVERY = 36000.0
UID = "t-1"
TENANT_ID = uuid.UUID(int=7)


def spec(**changes: Any) -> TenantSpec:
    return TenantSpec.model_validate(
        {"tier": "starter", "contactEmail": "ops@acme.example", **changes}
    )


def stated(pods: int = 0, unschedulable: int = 0, replicas: int = 0) -> Stated:
    placement = res.SenderPlacement(pods=pods, unschedulable=unschedulable, scheduler_message="")
    return Stated(generation=1, tenant_id=TENANT_ID, replicas=replicas, placement=placement)


def found(observed: list[Any]) -> dict[str, tuple[str, str]]:
    return {item.type: (item.status, item.reason) for item in observed}


@pytest.mark.parametrize(
    ("tenant", "state", "before", "conditions", "events"),
    [
        pytest.param(
            spec(),
            stated(),
            {},
            {
                "Ready": ("True", "Reconciled"),
                "SendersScheduled": ("True", "NoSenders"),
                "Suspended": ("False", "Active"),
            },
            [],
            id="new, no campaign sending",
        ),
        pytest.param(
            spec(),
            stated(pods=2, replicas=2),
            {"tier": "starter"},
            {
                "Ready": ("True", "Reconciled"),
                "SendersScheduled": ("True", "Scheduled"),
                "Suspended": ("False", "Active"),
            },
            [],
            id="senders placed",
        ),
        pytest.param(
            spec(),
            stated(pods=2, unschedulable=1, replicas=2),
            {"tier": "starter"},
            {
                "Ready": ("False", "SendersUnschedulable"),
                "SendersScheduled": ("False", "Unschedulable"),
                "Suspended": ("False", "Active"),
            },
            [],
            id="a sender finds no node",
        ),
        pytest.param(
            spec(suspended=True, suspendReason="unpaid"),
            stated(),
            {"tier": "starter"},
            {
                "Ready": ("True", "Reconciled"),
                "SendersScheduled": ("True", "NoSenders"),
                "Suspended": ("True", "SuspendedBySpec"),
            },
            [],
            id="suspended",
        ),
        pytest.param(
            spec(tier="business"),
            stated(),
            {"tier": "starter"},
            {
                "Ready": ("True", "Reconciled"),
                "SendersScheduled": ("True", "NoSenders"),
                "Suspended": ("False", "Active"),
            },
            ["TierChanged"],
            id="tier changed",
        ),
    ],
)
def test_decide(
    tenant: TenantSpec,
    state: Stated,
    before: Mapping[str, Any],
    conditions: dict[str, tuple[str, str]],
    events: list[str],
) -> None:
    decision = decide(tenant, "tenant-acme", state, 41, before)
    assert found(decision.observed) == conditions
    assert [event.reason for event in decision.events] == events
    assert decision.fields == {
        "namespace": "tenant-acme",
        "tier": tenant.tier.value,
        "senderReplicas": state.replicas,
        "emailsSentThisMonth": 41,
    }


def test_an_unschedulable_sender_says_what_to_do() -> None:
    decision = decide(spec(tier="business"), "tenant-acme", stated(1, 1, 1), 0, {})
    ready = next(item for item in decision.observed if item.type == "Ready")
    assert "1 of 1 sender pods cannot be scheduled" in ready.message
    assert res.unschedulable_hint(Tier.BUSINESS) in ready.message


# -- whole passes on the framework --------------------------------------------------------


@dataclass
class FakeKube:
    """Stores status like the API server's merge patch; every other request is recorded and
    fails (a pass that reaches them is a full pass)."""

    stored: dict[str, Any] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    async def patch_status(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
    ) -> dict[str, Any]:
        assert namespace is None  # Tenants are cluster-scoped
        self.patches.append(dict(patch["status"]))
        self.stored = merge(self.stored, patch["status"])
        return dict(self.stored)

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.requests.append(f"apply {manifest['kind']}")
        raise ReconcileError("Unreachable", "the API server did not answer; retrying")


def merge(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def body(status: Mapping[str, Any], **changes: Any) -> kopf.Body:
    raw = {
        "apiVersion": "penguinmails.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "acme", "uid": UID, "generation": 1},
        "spec": {"tier": "starter", "contactEmail": "ops@acme.example", **changes},
        "status": dict(status),
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


class Sends:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(
        self,
        ctx: Context,
        name: str,
        tenant: TenantSpec,
        tenant_id: uuid.UUID,
        now: datetime,
        logger: Logger,
    ) -> int:
        return self.count


@pytest.fixture
def events() -> Iterator[asyncio.Queue[Any]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(queue)
    yield queue


def posted(queue: asyncio.Queue[Any]) -> list[tuple[str, str]]:
    return [
        (event.type, event.reason) for event in (queue.get_nowait() for _ in range(queue.qsize()))
    ]


def run_pass(controller: TenantController, kube: FakeKube, obj: kopf.Body, *, timer: bool) -> None:
    async def go() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        await controller.run(ctx, obj, retry=0, logger=logging.getLogger("test"), timer=timer)

    asyncio.run(go())


def controller(clock: FakeClock, sends: Sends) -> TenantController:
    tenants = TenantController(interval=60, full_every=FULL_EVERY, clock=clock, count_sends=sends)
    # What a full pass of this process stated (the full pass itself needs the API server).
    tenants.resyncs.record(UID, stated())
    return tenants


def test_a_cheap_resync_reads_nothing_and_writes_only_what_changed(
    events: asyncio.Queue[Any],
) -> None:
    clock, sends, kube = FakeClock(T0), Sends(), FakeKube()
    tenants = controller(clock, sends)
    run_pass(tenants, kube, body({}), timer=True)
    assert kube.requests == [] and len(kube.patches) == 1
    assert kube.stored["senderReplicas"] == 0 and kube.stored["tier"] == "starter"
    # Events on the transitions of the first pass, each once.
    assert posted(events) == [
        ("Normal", "Reconciled"),
        ("Normal", "NoSenders"),
        ("Normal", "Active"),
    ]
    # Nothing changed: nothing read, nothing written, no event.
    clock.advance(60)
    run_pass(tenants, kube, body(kube.stored), timer=True)
    assert kube.requests == [] and len(kube.patches) == 1 and posted(events) == []
    # A send counted: that field alone is written, still no event.
    sends.count = 5
    clock.advance(60)
    run_pass(tenants, kube, body(kube.stored), timer=True)
    assert kube.requests == [] and kube.patches[-1] == {"emailsSentThisMonth": 5}
    assert posted(events) == []


def test_a_full_pass_comes_with_a_change_and_when_the_last_one_is_old(
    events: asyncio.Queue[Any],
) -> None:
    clock, kube = FakeClock(T0), FakeKube()
    tenants = controller(clock, Sends())
    run_pass(tenants, kube, body({}), timer=True)
    assert kube.requests == []
    clock.advance(FULL_EVERY)
    run_pass(tenants, kube, body(kube.stored), timer=True)
    assert kube.requests == ["apply Namespace"]
    # The failure lands on Ready (not Stalled: it is transient), with one Warning; the timer
    # then backs off on the controller's clock.
    ready = next(c for c in kube.stored["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Unreachable")
    assert ("Warning", "Unreachable") in posted(events)
    run_pass(tenants, kube, body(kube.stored), timer=True)
    assert kube.requests == ["apply Namespace"]
    # A change is a full pass whatever the timer says, and kopf retries it after the backoff.
    with pytest.raises(kopf.TemporaryError):
        run_pass(tenants, kube, body(kube.stored), timer=False)
    assert kube.requests == ["apply Namespace"] * 2


def test_suspension_is_a_normal_event_once_and_an_invalid_spec_names_the_field(
    events: asyncio.Queue[Any],
) -> None:
    clock, kube = FakeClock(T0), FakeKube()
    tenants = controller(clock, Sends())
    run_pass(tenants, kube, body({}), timer=True)
    posted(events)
    tenants.resyncs.record(UID, stated())
    run_pass(tenants, kube, body(kube.stored, suspended=True), timer=True)
    assert posted(events) == [("Normal", "SuspendedBySpec")]
    run_pass(tenants, kube, body(kube.stored, suspended=True), timer=True)
    assert posted(events) == []
    run_pass(tenants, kube, body(kube.stored, tier="platinum"), timer=False)
    ready = next(c for c in kube.stored["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.tier: ")
    assert posted(events) == [("Warning", "InvalidSpec")]
