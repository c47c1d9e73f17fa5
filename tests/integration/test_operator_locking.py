"""Passes of one object never overlap: a DKIM key, once written, is never replaced by another.

The zone has a second nameserver that answers every query only after a delay (a proxy to the
real one), so every SendingDomain pass spends that delay verifying, while its timer (1 s tick)
keeps running passes. A rotation asked for by annotation then runs in the change handler while
timer passes come and go. Without one lock per object, a timer pass that read the keys before
the rotation was written rotates again and overwrites the new key under the same selector: the
Secret then signs with a key that DNS does not publish.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import dns.message
import dns.query
import pytest
from kubernetes import client, watch

from penguinmails.common.dkim.keys import INDEX_KEY
from penguinmails.devstack.knot import KnotServer, minimal_zone
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_sendingdomain import ZONE, domain_body, tsig_secret

pytestmark = pytest.mark.integration

SLOW_NS = "127.0.0.77"
DELAY_SECONDS = 5.0
# The verifier gives UDP half the DNS timeout: the delayed answers must still arrive in time.
DNS_TIMEOUT_SECONDS = 4 * DELAY_SECONDS
TIMER = "Timer 'sendingdomains-resync'"


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    zone = minimal_zone(ZONE, extra=f"@ IN NS ns2\nns2 IN A {SLOW_NS}")
    with KnotServer(tmp_path_factory.mktemp("knot"), zones={ZONE: zone}) as server:
        yield server


@pytest.fixture(scope="module")
def slow_nameserver(knot: KnotServer) -> Iterator[None]:
    """A second authoritative server: Knot's answers, each DELAY_SECONDS late (UDP)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((SLOW_NS, knot.port))

    def answer(data: bytes, peer: tuple[str, int]) -> None:
        time.sleep(DELAY_SECONDS)
        query = dns.message.from_wire(data)
        response = dns.query.udp(query, knot.address, port=knot.port, timeout=5)
        udp.sendto(response.to_wire(), peer)

    def serve() -> None:
        while True:
            try:
                data, peer = udp.recvfrom(65535)
            except OSError:
                return
            threading.Thread(target=answer, args=(data, peer), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield
    udp.close()


@pytest.fixture(scope="module")
def operator(
    operator_process: OperatorFactory, knot: KnotServer, slow_nameserver: None
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
    # Every version of the key Secret, in the order the API server stored them: a key generated
    # (a selector with a new private key) and a key overwritten (a selector that was there,
    # now with another private key).
    generated: list[str] = []
    overwritten: list[str] = []
    tokens: list[str | None] = []
    states: dict[str, str] = {}  # selector -> state, in the Secret's latest version
    stop = watch.Watch()

    def record() -> None:
        previous: dict[str, str] = {}
        for event in stop.stream(
            core.list_namespaced_secret,
            namespace,
            field_selector="metadata.name=main-dkim",
            timeout_seconds=600,
        ):
            data = event["object"].data or {}
            pems = {name: value for name, value in data.items() if name.endswith(".pem")}
            for name, value in pems.items():
                if previous.get(name) != value:
                    generated.append(name)
                    if name in previous:
                        overwritten.append(name)
            previous = pems
            index = json.loads(base64.b64decode(data.get(INDEX_KEY, "e30=")))
            tokens.append(index.get("rotateToken"))
            states.clear()
            states.update({k["selector"]: k["state"] for k in index.get("keys", [])})

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

        def settled() -> bool:
            """Ready, no key waiting to be activated, and status showing the Secret's keys:
            a rotation asked for now generates new keys (one asked for while a key is pending
            only marks the token as seen)."""
            obj = custom_objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "sendingdomains", "main"
            )
            status = obj.get("status") or {}
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in status.get("conditions") or []
            )
            selectors = (status.get("dkim") or {}).get("selectors") or []
            shown = {s["selector"] for s in selectors}
            stored = dict(states)
            return ready and shown == set(stored) and "Pending" not in stored.values()

        for token in ("first", "second"):
            wait_for(settled, timeout=DNS_TIMEOUT_SECONDS * 10, what="keys active, none pending")
            before = len(generated)
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
            assert len(generated) == before + 2, generated  # one new key per algorithm
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
