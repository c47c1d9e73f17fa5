"""A tenant pointing its DNS provider at a loopback address: refused before any connection."""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.conftest import GROUP, VERSION, OperatorFactory, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A port on loopback that records every connection made to it."""
    accepted: list[object] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_powerdns_api_on_loopback_is_refused_with_a_condition_naming_the_field(
    operator_process: OperatorFactory,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    listener: tuple[int, list[object]],
) -> None:
    port, accepted = listener
    operator = operator_process(PM_EGRESS_ALLOW="")  # production: loopback is not allowed
    namespace = f"egress-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SendingDomain",
        "metadata": {"name": "main"},
        "spec": {
            "domain": f"{namespace}.example.com",
            "zone": "example.com",
            "dnsProvider": {
                "type": "powerdns",
                "powerdns": {"apiUrl": f"http://127.0.0.1:{port}"},
                "credentialsSecretRef": {"name": "pdns", "key": "apiKey"},
            },
            "mx": {"enabled": False},
        },
    }
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sendingdomains", body
    )

    def refused() -> dict[str, Any] | None:
        obj = custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "sendingdomains", "main"
        )
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition["type"] == "Ready" and condition["reason"] == "DestinationNotAllowed":
                return dict(condition)
        return None

    condition = wait_for(refused, timeout=60, what="Ready=False, DestinationNotAllowed")
    assert condition["status"] == "False"
    assert condition["message"].startswith("spec.dnsProvider.powerdns.apiUrl: 127.0.0.1 is")
    assert "loopback" in condition["message"]
    assert accepted == []  # checked before connecting
    custom_objects.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "sendingdomains", "main"
    )

    def gone() -> bool:
        try:
            custom_objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "sendingdomains", "main"
            )
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone, timeout=60, what="the SendingDomain deleted (nothing was published)")
    assert accepted == []
    core.delete_namespace(namespace)
    operator.stop()
    operator.assert_no_errors()


def test_relay_on_loopback_is_refused_with_a_condition_naming_the_field(
    operator_process: OperatorFactory,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    listener: tuple[int, list[object]],
) -> None:
    port, accepted = listener
    operator = operator_process(PM_EGRESS_ALLOW="", PM_SMTP_PROBE_SECONDS="1")
    namespace = f"egress-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmtpServer",
        "metadata": {"name": "inside"},
        "spec": {
            "hostname": "relay.example.com",
            "provider": {"relay": {"host": "127.0.0.1", "port": port, "tls": "starttls"}},
        },
    }
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "smtpservers", body)

    def refused() -> dict[str, Any] | None:
        obj = custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "smtpservers", "inside"
        )
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition["reason"] == "DestinationNotAllowed":
                return dict(condition)
        return None

    condition = wait_for(refused, timeout=60, what="a DestinationNotAllowed condition")
    assert condition["status"] == "False"
    assert condition["message"].startswith("spec.provider.relay.host: 127.0.0.1 is a loopback")
    assert accepted == []  # never probed
    custom_objects.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "smtpservers", "inside"
    )
    core.delete_namespace(namespace)
    operator.stop()
    operator.assert_no_errors()
