"""What a `rotate-dkim` pass does not wait for: RSA generation (a spare key made ahead, by
worker processes or a thread of its own, handed out once) and a read of the key Secret (the
key set this process last wrote or read, stored back only over the Secret at that
resourceVersion: a Secret changed meanwhile is read and decided on, no key is lost)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kopf._core.engines import posting
from kubernetes.client.exceptions import ApiException

from penguinmails.common.dkim.keygen import ProcessKeys, ThreadKeys
from penguinmails.common.dkim.keys import (
    KeySet,
    KeyState,
    generate_private_key,
    load_key_set,
    secret_data,
)
from penguinmails.common.dkim.rotation import RotationPolicy, advance
from penguinmails.common.dkim.spare import SpareKeys
from penguinmails.common.dkim.written import WrittenKeys
from penguinmails.common.egress import ALLOW_ENV
from penguinmails.operator import sendingdomain
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.context import Context
from penguinmails.operator.dns.config import DnsSettings
from penguinmails.operator.sendingdomain import ROTATE_ANNOTATION, SendingDomainController

T0 = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
POLICY = RotationPolicy(
    algorithms=("ed25519",),
    selector_prefix="pm",
    rotate_after=timedelta(days=90),
    retire_after=timedelta(days=7),
    ttl=timedelta(seconds=60),
)


class CountingGenerator:
    """Distinct fake keys, recording the thread each was made in."""

    def __init__(self, fail_first: bool = False) -> None:
        self.counter = itertools.count(1)
        self.threads: list[str] = []
        self.fail_first = fail_first

    def __call__(self, algorithm: str) -> bytes:
        self.threads.append(threading.current_thread().name)
        n = next(self.counter)
        if self.fail_first and n == 1:
            raise RuntimeError("no entropy")
        return f"{algorithm}-{n}".encode()


def test_a_spare_rsa_key_is_made_ahead_in_its_own_thread_and_handed_out_once() -> None:
    generate = CountingGenerator()
    spares = SpareKeys(ThreadKeys(generate))
    try:
        spares.prepare()
        # Made in the spare thread, before anyone asked.
        while not spares.ready("rsa2048"):
            threading.Event().wait(0.01)
        assert generate.threads == [generate.threads[0]]
        assert generate.threads[0].startswith("dkim-spare")
        first = asyncio.run(spares.take("rsa2048"))
        assert first == b"rsa2048-1"
        # Taking it started the next spare: a second domain gets another key, never this one.
        second = asyncio.run(spares.take("rsa2048"))
        third = asyncio.run(spares.take("rsa2048"))
        assert len({first, second, third}) == 3
        assert all(name.startswith("dkim-spare") for name in generate.threads)
    finally:
        spares.close()


def test_ed25519_has_no_spare_and_a_failed_spare_is_made_again() -> None:
    generate = CountingGenerator(fail_first=True)
    spares = SpareKeys(ThreadKeys(generate))
    try:
        spares.prepare()
        key = asyncio.run(spares.take("rsa2048"))  # the spare failed: made again
        assert key == b"rsa2048-2"
        assert asyncio.run(spares.take("ed25519")).startswith(b"-----BEGIN PRIVATE KEY")
        assert not spares.ready("ed25519")
    finally:
        spares.close()


def test_real_spare_keys_are_rsa_2048_and_distinct() -> None:
    spares = SpareKeys(ProcessKeys(1))
    try:
        spares.prepare()

        async def two() -> list[bytes]:
            return [await spares.take("rsa2048") for _ in range(2)]

        keys = asyncio.run(two())
        assert keys[0] != keys[1]
        assert all(b"BEGIN PRIVATE KEY" in key for key in keys)
        assert all(len(key) > 1600 for key in keys)  # 2048-bit PKCS#8 PEM, not Ed25519's 119
    finally:
        spares.close()


def test_written_keys_forget_a_version_they_did_not_get() -> None:
    written = WrittenKeys()
    written.remember("ns", "main-dkim", "7", KeySet())
    assert written.get("ns", "main-dkim") is not None
    written.remember("ns", "main-dkim", None, KeySet())
    assert written.get("ns", "main-dkim") is None


def active_keys() -> KeySet:
    keys, _ = advance(KeySet(), POLICY, now=T0 - timedelta(days=1), verified=())
    pending = keys.keys[0].selector
    keys, _ = advance(keys, POLICY, now=T0 - timedelta(days=1), verified=(pending,))
    keys, _ = advance(keys, POLICY, now=T0 - timedelta(hours=23), verified=(pending,))
    assert [k.state for k in keys.keys] == [KeyState.ACTIVE]
    return keys


@dataclass
class VersionedKube:
    """Secrets with resourceVersions, as the API server keeps them: an apply that names a
    resourceVersion other than the stored one is refused with 409 Conflict."""

    secrets: dict[str, dict[str, Any]]
    calls: list[str] = field(default_factory=list)
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(100))

    def store(self, name: str, data: Mapping[str, str]) -> None:
        version = str(next(self.versions))
        self.secrets[name] = {"metadata": {"name": name, "resourceVersion": version}, "data": data}

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        self.calls.append(f"get {kind} {name}")
        return self.secrets.get(name) if kind == "Secret" else None

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        name = str(manifest["metadata"]["name"])
        self.calls.append(f"apply {manifest['kind']} {name}")
        if manifest["kind"] != "Secret":
            return dict(manifest)
        wanted = manifest["metadata"].get("resourceVersion")
        stored = (self.secrets.get(name) or {}).get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != stored:
            raise ApiException(status=409, reason="Conflict")
        self.store(name, manifest["data"])
        return self.secrets[name]

    async def patch_status(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append("patch status")
        return {"status": patch["status"]}


@pytest.fixture
def events() -> Iterator[asyncio.Queue[Any]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(queue)
    yield queue


@pytest.fixture
def fresh_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[SpareKeys]:
    """This process's memory of written key sets and its spares, new for each test."""
    monkeypatch.setattr(sendingdomain, "WRITTEN", WrittenKeys())
    spares = SpareKeys(ThreadKeys(generate_private_key))
    monkeypatch.setattr(sendingdomain, "SPARES", spares)
    # The DNS server's address (a documentation network) passes the egress check; nothing
    # connects to it: each pass stops at its missing TSIG credentials, after `_keys`.
    monkeypatch.setenv(ALLOW_ENV, "192.0.2.0/24")
    yield spares
    spares.close()


def domain(token: str | None, algorithms: list[str]) -> Any:
    raw: dict[str, Any] = {
        "apiVersion": "penguinmails.io/v1alpha1",
        "kind": "SendingDomain",
        "metadata": {
            "name": "main",
            "namespace": "bench",
            "uid": "u-1",
            "generation": 1,
            "annotations": {ROTATE_ANNOTATION: token} if token else {},
        },
        "spec": {
            "domain": "mail.example.com",
            "dkim": {"algorithms": algorithms, "selectorPrefix": "pm"},
            "dnsProvider": {
                "type": "rfc2136",
                "rfc2136": {"server": "192.0.2.53", "tsigKeyName": "k"},
                "credentialsSecretRef": {"name": "tsig", "key": "secret"},
            },
        },
        "status": {},
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


def run_pass(
    kube: VersionedKube, token: str | None, algorithms: tuple[str, ...] | list[str] = ("ed25519",)
) -> None:
    controller = SendingDomainController(DnsSettings.from_env(), clock=FakeClock(T0))

    async def go() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        await controller.run(
            ctx,
            domain(token, list(algorithms)),
            retry=0,
            logger=logging.getLogger("t"),
            timer=False,
        )

    with pytest.raises(kopf.TemporaryError, match="tsig"):
        asyncio.run(go())


def key_calls(kube: VersionedKube) -> list[str]:
    return [c for c in kube.calls if c.endswith("main-dkim")]


def test_a_rotation_starts_from_the_key_set_this_process_last_stored_without_reading_it(
    events: asyncio.Queue[Any], fresh_memory: SpareKeys
) -> None:
    kube = VersionedKube({})
    kube.store("main-dkim", secret_data(active_keys()))
    run_pass(kube, None)  # an ordinary pass reads the Secret, as every pass did
    assert key_calls(kube) == ["get Secret main-dkim"]
    kube.calls.clear()
    run_pass(kube, "now")
    # Straight to the conditional write: no read of the key Secret first.
    assert key_calls(kube) == ["apply Secret main-dkim"]
    after = load_key_set(kube.secrets["main-dkim"]["data"])
    assert after.rotate_token == "now"
    assert [k.state for k in after.keys] == [KeyState.ACTIVE, KeyState.PENDING]
    kube.calls.clear()
    run_pass(kube, "again")  # the memory follows its own writes
    assert key_calls(kube) == ["apply Secret main-dkim"]


def test_a_secret_changed_meanwhile_is_read_and_decided_on_and_no_key_is_lost(
    events: asyncio.Queue[Any], fresh_memory: SpareKeys
) -> None:
    kube = VersionedKube({})
    kube.store("main-dkim", secret_data(active_keys()))
    run_pass(kube, None)
    # Someone else (another replica) rotated meanwhile with the same token.
    theirs, _ = advance(
        load_key_set(kube.secrets["main-dkim"]["data"]),
        POLICY,
        now=T0,
        verified=(),
        rotate_token="now",
    )
    kube.store("main-dkim", secret_data(theirs))
    kube.calls.clear()
    run_pass(kube, "now")
    # The write from memory is refused; the pass reads the Secret and, seeing the token
    # handled, makes no other key: their new key stays, none is overwritten or added.
    assert key_calls(kube) == ["apply Secret main-dkim", "get Secret main-dkim"]
    assert load_key_set(kube.secrets["main-dkim"]["data"]) == theirs
    # Rotating again now starts from what it read.
    kube.calls.clear()
    run_pass(kube, "later")
    assert key_calls(kube) == ["apply Secret main-dkim"]
    after = load_key_set(kube.secrets["main-dkim"]["data"])
    assert {k.selector for k in theirs.keys} <= {k.selector for k in after.keys}


def test_new_rsa_keys_are_the_spare_made_ahead(
    events: asyncio.Queue[Any], fresh_memory: SpareKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[bytes] = []

    def generate(algorithm: str) -> bytes:
        key = generate_private_key(algorithm)
        made.append(key)
        return key

    spares = SpareKeys(ThreadKeys(generate))
    monkeypatch.setattr(sendingdomain, "SPARES", spares)
    try:
        spares.prepare()
        while not spares.ready("rsa2048"):
            threading.Event().wait(0.01)
        kube = VersionedKube({})
        run_pass(kube, None, algorithms=["rsa2048"])  # the first keys
        first = load_key_set(kube.secrets["main-dkim"]["data"]).keys[0]
        assert first.private_key_pem == made[0]
        run_pass(kube, "now", algorithms=["rsa2048"])  # a rotation: the next spare
        keys = load_key_set(kube.secrets["main-dkim"]["data"]).keys
        assert [k.private_key_pem for k in keys] == made[:2]
    finally:
        spares.close()
