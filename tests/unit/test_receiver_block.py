"""What the SmtpServer and SendingDomain controllers state as `status.receiverBlock` from the
block they observe (pure, on a fake clock), and how often a timer pass reads it again."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import kopf
import pytest

from penguinmails.common.db.blocks import BLOCK_PAUSE_SECONDS, BlockScope, Strikes
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.dns.config import DnsSettings
from penguinmails.operator.receiver_block import Checks, decide, show
from penguinmails.operator.sendingdomain import SendingDomainController

T0 = datetime(2026, 12, 2, 6, 0, 0, 250000, tzinfo=UTC)
UNTIL = "2026-12-02T06:15:00Z"  # T0 + the 15-minute pause, to the second


def strikes(scope: BlockScope, count: int = 3, status: str | None = "5.7.1") -> Strikes:
    return Strikes(scope, "target", count, 0.0, status, T0)


@pytest.mark.parametrize(
    ("found", "after", "expected"),
    [
        pytest.param(None, 0, None, id="no block: the field goes"),
        pytest.param(
            Strikes(BlockScope.SERVER, "s", 3, 0.0, "5.7.1", None), 0, None, id="no time: none"
        ),
        pytest.param(
            strikes(BlockScope.SERVER),
            0,
            {
                "reason": "receivers refused 3 messages (5.7.1) within 10 minutes, blocking "
                "this server's address (policy or reputation); senders skip it until then",
                "until": UNTIL,
                "strikes": 3,
                "lastStatus": "5.7.1",
            },
            id="a server's block",
        ),
        pytest.param(
            strikes(BlockScope.DOMAIN, 4, "5.7.26"),
            60,
            {
                "reason": "receivers refused 4 messages (5.7.26) within 10 minutes, blocking "
                "this domain (policy, reputation or authentication); senders skip it until "
                "then",
                "until": UNTIL,
                "strikes": 4,
                "lastStatus": "5.7.26",
            },
            id="a domain's block, a minute on",
        ),
        pytest.param(
            strikes(BlockScope.SERVER, status=None),
            0,
            {
                "reason": "receivers refused 3 messages within 10 minutes, blocking this "
                "server's address (policy or reputation); senders skip it until then",
                "until": UNTIL,
                "strikes": 3,
            },
            id="no enhanced status code",
        ),
        pytest.param(
            strikes(BlockScope.SERVER),
            BLOCK_PAUSE_SECONDS - 1,
            {"until": UNTIL},
            id="a second before it ends",
        ),
        pytest.param(strikes(BlockScope.DOMAIN), BLOCK_PAUSE_SECONDS, None, id="ended"),
    ],
)
def test_the_status_field_follows_the_block_observed(
    found: Strikes | None, after: float, expected: dict[str, Any] | None
) -> None:
    clock = FakeClock(T0)
    clock.advance(after)
    shown = decide(found, clock.now())
    if expected is None or shown is None:
        assert shown == expected
    else:
        assert {key: shown.get(key) for key in expected} == expected
        assert set(shown) <= {"reason", "until", "strikes", "lastStatus"}


def test_a_timer_pass_reads_the_block_once_per_interval_per_object() -> None:
    clock = FakeClock(T0)
    checks = Checks(clock, interval=60)
    assert checks.due("a") and checks.due("b")  # never read: due
    checks.checked("a")
    assert not checks.due("a") and checks.due("b")
    clock.advance(59)
    assert not checks.due("a")
    clock.advance(1)
    assert checks.due("a")
    checks.checked("a")
    checks.forget("a")  # deleted: read again should it come back
    assert checks.due("a")


def test_the_reason_fits_the_crd_limit() -> None:
    # The reason must fit the CRD's 300 characters with the longest counts and codes.
    shown = decide(strikes(BlockScope.DOMAIN, 10**6, "5.7.26"), T0 + timedelta(seconds=1))
    assert shown is not None and len(shown["reason"]) <= 300


READY = {"type": "Ready", "status": "True", "reason": "Ready", "message": ""}


@pytest.mark.parametrize(
    ("status", "checked", "after", "expected"),
    [
        pytest.param({}, True, 0, True, id="never reconciled: the full pass is due"),
        pytest.param(
            {"conditions": [READY], "records": [{"lastChecked": "2026-12-02T06:00:00Z"}]},
            False,
            0,
            True,
            id="verified, block never read: due",
        ),
        pytest.param(
            {"conditions": [READY], "records": [{"lastChecked": "2026-12-02T06:00:00Z"}]},
            True,
            59,
            False,
            id="verified, block read a moment ago: not due",
        ),
        pytest.param(
            {"conditions": [READY], "records": [{"lastChecked": "2026-12-02T06:00:00Z"}]},
            True,
            60,
            True,
            id="verified, block read a resync ago: due (for the block alone)",
        ),
    ],
)
def test_a_verified_domain_is_due_for_its_block_once_per_resync(
    status: dict[str, Any], checked: bool, after: float, expected: bool
) -> None:
    clock = FakeClock(T0)
    controller = SendingDomainController(DnsSettings.from_env(), clock=clock, block_seconds=60)
    raw: dict[str, Any] = {
        "metadata": {"name": "d", "namespace": "tenant-a", "uid": "u"},
        "spec": {"verifyInterval": "10m"},
        "status": status,
    }
    obj = kopf.Body(raw)  # type: ignore[arg-type]
    if checked:
        controller.blocks.checked("u")
    clock.advance(after)
    assert controller.due(obj, clock.now()) is expected


class Status:
    """The part of a pass's status writer `show` uses: what is stored, and the writes."""

    def __init__(self, current: dict[str, Any]) -> None:
        self.current = current
        self.writes: list[dict[str, Any]] = []

    async def write(self, **fields: Any) -> None:
        self.writes.append(fields)
        self.current = {**self.current, **fields}


SHOWN = decide(strikes(BlockScope.SERVER), T0)


@pytest.mark.parametrize(
    ("stored", "read", "writes", "checked"),
    [
        pytest.param({}, strikes(BlockScope.SERVER), [{"receiverBlock": SHOWN}], True, id="new"),
        pytest.param({"receiverBlock": SHOWN}, strikes(BlockScope.SERVER), [], True, id="same"),
        pytest.param({"receiverBlock": SHOWN}, None, [{"receiverBlock": None}], True, id="ended"),
        pytest.param({}, None, [], True, id="none, none shown: nothing written"),
        pytest.param(
            {"receiverBlock": SHOWN},
            OSError("connection refused"),
            [],
            False,
            id="database unreachable: left as it was, read again next pass",
        ),
        pytest.param({}, asyncpg.InterfaceError("pool is closed"), [], False, id="pool closed"),
    ],
)
def test_show_writes_only_a_change_and_survives_the_database(
    stored: dict[str, Any],
    read: Strikes | Exception | None,
    writes: list[dict[str, Any]],
    checked: bool,
) -> None:
    clock = FakeClock(T0)
    checks = Checks(clock, interval=60)
    status = Status(dict(stored))
    run = SimpleNamespace(
        name="mx", uid="u", now=clock.now(), status=status, logger=logging.getLogger("t")
    )

    async def observed() -> Strikes | None:
        if isinstance(read, Exception):
            raise read
        return read

    asyncio.run(show(run, checks, observed))  # type: ignore[arg-type]
    assert status.writes == writes
    assert checks.due("u") is not checked
