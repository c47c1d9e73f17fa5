"""`penguinmails.io/rotate-dkim` starts a rotation before anything slow: the new key is in the
domain's Secret and in its status before the pass reaches its DNS provider (which here
refuses, as a slow or broken one would keep the pass from getting further). The pass runs
through the framework with fake clients, on a fake clock; `starts_keys` decides (pure)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kopf._core.engines import posting

from penguinmails.common.dkim.keys import KeySet, KeyState, load_key_set, secret_data
from penguinmails.common.dkim.rotation import RotationPolicy, advance
from penguinmails.common.egress import ALLOW_ENV
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.context import Context
from penguinmails.operator.dns.config import DnsSettings
from penguinmails.operator.sendingdomain import (
    ROTATE_ANNOTATION,
    SendingDomainController,
    starts_keys,
)

T0 = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
POLICY = RotationPolicy(
    algorithms=("ed25519",),
    selector_prefix="pm",
    rotate_after=timedelta(days=90),
    retire_after=timedelta(days=7),
    ttl=timedelta(seconds=60),
)


def active_keys(token: str | None = None) -> KeySet:
    keys, _ = advance(KeySet(), POLICY, now=T0 - timedelta(days=1), verified=())
    keys, _ = advance(keys, POLICY, now=T0 - timedelta(days=1), verified=())
    pending = keys.keys[0].selector
    keys, _ = advance(keys, POLICY, now=T0 - timedelta(days=1), verified=(pending,))
    keys, _ = advance(keys, POLICY, now=T0 - timedelta(hours=23), verified=(pending,))
    assert [k.state for k in keys.keys] == [KeyState.ACTIVE]
    return KeySet(keys.keys, token)


@pytest.mark.parametrize(
    ("key_set", "token", "expected"),
    [
        pytest.param(KeySet(), None, True, id="no keys yet: the first ones"),
        pytest.param(KeySet(), "t1", True, id="no keys yet, annotated"),
        pytest.param(active_keys(), None, False, id="keys, no annotation"),
        pytest.param(active_keys(), "t1", True, id="annotated for the first time"),
        pytest.param(active_keys("t1"), "t1", False, id="that value rotated already"),
        pytest.param(active_keys("t1"), "t2", True, id="a new value"),
    ],
)
def test_which_passes_make_keys_first(key_set: KeySet, token: str | None, expected: bool) -> None:
    assert starts_keys(key_set, token) is expected


@dataclass
class FakeKube:
    """The Secrets and the status of one namespace, as the API server would keep them."""

    secrets: dict[str, dict[str, Any]]
    status: dict[str, Any]
    calls: list[str] = field(default_factory=list)

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        self.calls.append(f"get {kind} {name}")
        return self.secrets.get(name) if kind == "Secret" else None

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        name = str(manifest["metadata"]["name"])
        self.calls.append(f"apply {manifest['kind']} {name}")
        self.secrets[name] = dict(manifest)
        return dict(manifest)

    async def patch_status(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append("patch status")
        self.status = {**self.status, **patch["status"]}
        return {"status": self.status, **self.status}


@pytest.fixture
def events() -> Iterator[asyncio.Queue[Any]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(queue)
    yield queue


def domain(token: str, status: Mapping[str, Any]) -> Any:
    raw: dict[str, Any] = {
        "apiVersion": "penguinmails.io/v1alpha1",
        "kind": "SendingDomain",
        "metadata": {
            "name": "main",
            "namespace": "bench",
            "uid": "u-1",
            "generation": 1,
            "annotations": {ROTATE_ANNOTATION: token},
        },
        "spec": {
            "domain": "mail.example.com",
            "dkim": {"algorithms": ["ed25519"], "selectorPrefix": "pm"},
            "dnsProvider": {
                "type": "rfc2136",
                "rfc2136": {"server": "192.0.2.53", "tsigKeyName": "k"},
                "credentialsSecretRef": {"name": "tsig", "key": "secret"},
            },
        },
        "status": dict(status),
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


def test_rotate_dkim_stores_and_shows_the_new_key_before_the_provider_is_reached(
    events: asyncio.Queue[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DNS server's address (a documentation network) passes the egress check; nothing
    # connects to it: the pass stops at its missing credentials.
    monkeypatch.setenv(ALLOW_ENV, "192.0.2.0/24")
    before = active_keys()
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "the domain may send",
        "lastTransitionTime": "2026-12-01T07:00:00Z",
        "observedGeneration": 1,
    }
    status = {"observedGeneration": 1, "conditions": [ready]}
    kube = FakeKube({"main-dkim": {"data": secret_data(before)}}, status)
    controller = SendingDomainController(DnsSettings.from_env(), clock=FakeClock(T0))

    async def go() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        await controller.run(
            ctx, domain("now", status), retry=0, logger=logging.getLogger("t"), timer=False
        )

    # The provider is never reached: its credentials Secret does not exist (a transient
    # failure, retried by kopf). The rotation has started all the same.
    with pytest.raises(kopf.TemporaryError, match="tsig"):
        asyncio.run(go())
    after = load_key_set(kube.secrets["main-dkim"]["data"])
    new = [k for k in after.keys if k.selector not in {k.selector for k in before.keys}]
    assert [k.state for k in new] == [KeyState.PENDING] and after.rotate_token == "now"
    shown = {s["selector"]: s["state"] for s in kube.status["dkim"]["selectors"]}
    assert shown == {before.keys[0].selector: "Active", new[0].selector: "Pending"}
    # In that order: the Secret, then the status, then the provider's credentials.
    assert kube.calls.index("apply Secret main-dkim") < kube.calls.index("get Secret tsig")
    assert kube.calls.index("patch status") < kube.calls.index("get Secret tsig")
