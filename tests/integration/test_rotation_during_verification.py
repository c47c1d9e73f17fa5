"""`rotate-dkim` starts its rotation while a timer pass of the same domain is verifying against
a nameserver that does not answer, rather than after that verification (issue 8: a rotation
within 5 s).

The zone has a second nameserver: a proxy to Knot that the test can silence. Silent, it takes
every question and answers none (UDP), and accepts TCP connections without ever answering: the
verifier waits half its DNS timeout on UDP, then the whole timeout on TCP, before giving up on
it. A timer pass caught in that verification holds the domain's lock; the change pass of the
annotation then has the lock only when the timer pass gives way (operator/handlers.py `Turn`),
which it does at once. Before, the rotation waited for the whole verification: the verifier
had fallen back to TCP (a connection the silent nameserver saw) before the new key was stored.
The unit test of the same path: tests/unit/test_timer_pass_gives_way.py.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import pytest
from kubernetes import client

from penguinmails.bench.measure import scrape
from penguinmails.common.dkim.keys import load_keys_from_secret
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.devstack.ports import free_port
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_sendingdomain import ZONE, domain_body, tsig_secret, wait_ready

pytestmark = pytest.mark.integration

SILENT_NS = "127.0.0.78"
DNS_TIMEOUT_SECONDS = 30.0
"""The verifier waits 15 s on UDP before it tries TCP: room for a loaded machine to deliver
the annotation and run the change pass's first steps before then."""
PLURAL = "sendingdomains"


class SilenceableNameserver:
    """Knot's answers over UDP and TCP, until `silence()`: then questions are counted and
    dropped, and TCP connections are counted and held open unanswered."""

    def __init__(self, knot: KnotServer) -> None:
        self.knot = knot
        self.silent = threading.Event()
        self.questions: list[str] = []
        self.connections: list[socket.socket] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((SILENT_NS, knot.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((SILENT_NS, knot.port))
        self.tcp.listen(64)
        for serve in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=serve, daemon=True).start()

    def silence(self) -> None:
        self.silent.set()

    def _forward(self, data: bytes) -> dns.message.Message:
        query = dns.message.from_wire(data)
        response, _ = dns.query.udp_with_fallback(
            query, self.knot.address, port=self.knot.port, timeout=5
        )
        return response

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            if self.silent.is_set():
                self.questions.append(str(dns.message.from_wire(data).question[0].name))
                continue
            threading.Thread(target=self._answer_udp, args=(data, peer), daemon=True).start()

    def _answer_udp(self, data: bytes, peer: tuple[str, int]) -> None:
        response = self._forward(data)
        self.udp.sendto(response.to_wire(), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                connection, _ = self.tcp.accept()
            except OSError:
                return
            if self.silent.is_set():
                self.connections.append(connection)  # held open, never answered
                continue
            threading.Thread(target=self._answer_tcp, args=(connection,), daemon=True).start()

    def _answer_tcp(self, connection: socket.socket) -> None:
        with connection:
            query, _ = dns.query.receive_tcp(connection, expiration=None)
            response = self._forward(query.to_wire())
            dns.query.send_tcp(connection, response)

    def close(self) -> None:
        for sock in (self.udp, self.tcp, *self.connections):
            sock.close()


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    zone = minimal_zone(ZONE, extra=f"@ IN NS ns2\nns2 IN A {SILENT_NS}")
    with KnotServer(tmp_path_factory.mktemp("knot"), zones={ZONE: zone}) as server:
        yield server


@pytest.fixture(scope="module")
def nameserver(knot: KnotServer) -> Iterator[SilenceableNameserver]:
    server = SilenceableNameserver(knot)
    yield server
    server.close()


@pytest.fixture(scope="module")
def operator(
    operator_process: OperatorFactory, knot: KnotServer, nameserver: SilenceableNameserver
) -> Iterator[tuple[OperatorProcess, int]]:
    port = free_port()
    handle = operator_process(
        PM_METRICS_PORT=str(port),
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS=str(DNS_TIMEOUT_SECONDS),
    )
    yield handle, port
    handle.stop()
    handle.assert_no_errors()


def selectors(core: client.CoreV1Api, namespace: str) -> set[str]:
    data = core.read_namespaced_secret("main-dkim", namespace).data
    return {key.selector for key in load_keys_from_secret(data)}


def yielded_passes(port: int) -> int:
    return sum(
        int(sample.value)
        for sample in scrape(port, timeout=10)
        if sample.name == "penguinmails_reconcile_total"
        and sample.labels == {"kind": "SendingDomain", "result": "yielded"}
    )


def test_rotate_dkim_does_not_wait_for_a_verification_against_a_silent_nameserver(
    operator: tuple[OperatorProcess, int],
    knot: KnotServer,
    nameserver: SilenceableNameserver,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
) -> None:
    _, port = operator
    namespace = f"rot-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        tsig_secret(core, namespace, knot.tsig.secret)
        # Ed25519 alone: every answer fits a UDP datagram, so the proxy's UDP path is the one
        # a verification takes while the nameserver answers.
        body: dict[str, Any] = domain_body(
            "main",
            f"{namespace}.{ZONE}",
            knot,
            dkim={"algorithms": ["ed25519"], "retireAfter": "2s"},
        )
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        wait_ready(custom_objects, namespace, "main")  # verified on both nameservers
        before = selectors(core, namespace)
        yielded_before = yielded_passes(port)

        # The next timer pass (verifyInterval 2 s) verifies against the silent nameserver.
        nameserver.silence()
        wait_for(
            lambda: nameserver.questions,
            timeout=DNS_TIMEOUT_SECONDS,
            what="a timer pass verifying against the silent nameserver",
        )
        custom_objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "main",
            {"metadata": {"annotations": {"penguinmails.io/rotate-dkim": "now"}}},
        )
        # Bounded by the verification it must not wait for (half the DNS timeout on UDP, the
        # whole on TCP); the assertion below tells which happened.
        wait_for(
            lambda: selectors(core, namespace) - before,
            timeout=DNS_TIMEOUT_SECONDS * 3,
            what="the rotation's new key in the Secret",
        )
        # The timer pass's verification never reached its TCP fallback: the rotation was stored
        # while it still waited for its first (UDP) answer, and the pass gave way.
        assert nameserver.connections == [], "the rotation waited for the verification"
        assert yielded_passes(port) > yielded_before
    finally:
        custom_objects.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        wait_for(
            lambda: (
                not custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
                    "items"
                ]
            ),
            timeout=DNS_TIMEOUT_SECONDS * 6,
            what="SendingDomain deleted",
        )
        core.delete_namespace(namespace)
