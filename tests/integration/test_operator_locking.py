"""Passes of one object never overlap: a DKIM key, once written, is never replaced by another.

The zone has a second nameserver that accepts queries and never answers, so every SendingDomain
pass spends the DNS timeout verifying against it, and the domain never becomes Ready: its timer
(1 s tick) runs pass after pass. A rotation asked for by annotation then runs in the change
handler while timer passes come and go. Without one lock per object, a timer pass that read the
keys before the rotation was written rotates again and overwrites the new key under the same
selector: the Secret then signs with a key that DNS does not publish.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator

import pytest
from kubernetes import client, watch

from penguinmails.common.dkim.keys import INDEX_KEY
from penguinmails.devstack.knot import KnotServer, minimal_zone
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_sendingdomain import ZONE, domain_body, tsig_secret

pytestmark = pytest.mark.integration

SILENT_NS = "127.0.0.77"
DNS_TIMEOUT_SECONDS = 4
TIMER = "Timer 'sendingdomains-resync'"


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    zone = minimal_zone(ZONE, extra=f"@ IN NS ns2\nns2 IN A {SILENT_NS}")
    with KnotServer(tmp_path_factory.mktemp("knot"), zones={ZONE: zone}) as server:
        yield server


@pytest.fixture(scope="module")
def silent_nameserver(knot: KnotServer) -> Iterator[None]:
    """Receives DNS queries (UDP and TCP) at the second NS address and never answers."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((SILENT_NS, knot.port))
    tcp = socket.socket()
    tcp.bind((SILENT_NS, knot.port))
    tcp.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(tcp.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield
    udp.close()
    tcp.close()
    for conn in held:
        conn.close()


@pytest.fixture(scope="module")
def operator(
    operator_process: OperatorFactory, knot: KnotServer, silent_nameserver: None
) -> Iterator[OperatorProcess]:
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS=str(DNS_TIMEOUT_SECONDS),
    )
    yield handle
    handle.stop()
    log = handle.log()
    assert "Traceback" not in log and "Unhandled" not in log, log[-4000:]


def test_rotation_and_timer_passes_never_write_two_keys_for_one_selector(
    operator: OperatorProcess,
    knot: KnotServer,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
) -> None:
    namespace = f"lock-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    # Every version of the key Secret, as the API server stored them.
    keys: dict[str, set[str]] = defaultdict(set)
    tokens: list[str | None] = []
    stop = watch.Watch()

    def record() -> None:
        for event in stop.stream(
            core.list_namespaced_secret,
            namespace,
            field_selector="metadata.name=main-dkim",
            timeout_seconds=600,
        ):
            data = event["object"].data or {}
            for name, value in data.items():
                if name.endswith(".pem"):
                    keys[name].add(value)
            index = json.loads(base64.b64decode(data.get(INDEX_KEY, "e30=")))
            tokens.append(index.get("rotateToken"))

    watcher = threading.Thread(target=record, daemon=True)
    watcher.start()
    try:
        tsig_secret(core, namespace, knot.tsig.secret)
        custom_objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "sendingdomains",
            domain_body("main", f"{namespace}.{ZONE}", knot),
        )
        wait_for(lambda: len(keys) == 2, timeout=60, what="the first two DKIM keys")
        for token in ("first", "second"):
            before = len(keys)
            custom_objects.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "sendingdomains",
                "main",
                {"metadata": {"annotations": {"penguinmails.io/rotate-dkim": token}}},
            )
            wait_for(
                lambda t=token: t in tokens,  # type: ignore[misc]
                timeout=DNS_TIMEOUT_SECONDS * 10,
                what=f"rotation {token} written",
            )
            # Every timer pass that was running when the rotation was written has ended once
            # two more have: any overwrite would have happened by then.
            ticks = operator.log().count(TIMER)
            wait_for(
                lambda n=ticks: operator.log().count(TIMER) >= n + 2,  # type: ignore[misc]
                timeout=DNS_TIMEOUT_SECONDS * 10,
                what="two more timer passes",
            )
            assert len(keys) == before + 2  # one new key per algorithm, once
        overwritten = {name: len(values) for name, values in keys.items() if len(values) > 1}
        assert not overwritten, f"keys replaced under the same selector: {overwritten}"
    finally:
        stop.stop()
        custom_objects.delete_collection_namespaced_custom_object(
            GROUP, VERSION, namespace, "sendingdomains"
        )
        wait_for(
            lambda: (
                not custom_objects.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "sendingdomains"
                )["items"]
            ),
            timeout=120,
            what="SendingDomain deleted",
        )
        core.delete_namespace(namespace)
