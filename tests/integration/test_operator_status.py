"""Status says what is true now: a field that no longer applies disappears from it.

An external relay SmtpServer is probed by the operator process while nothing listens on its
port (the probe records the error), then an SMTP server starts there: the next probe's status
must not keep the old error beside the new banner.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from penguinmails.devstack.ports import free_port
from penguinmails.devstack.sink import SinkServer
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory) -> Iterator[OperatorProcess]:
    # Probes every second, no blocklists: only the SMTP probe matters here.
    handle = operator_process(
        PM_SMTP_POLL_SECONDS="1",
        PM_SMTP_PROBE_SECONDS="1",
        PM_SMTP_PROBE_TIMEOUT_SECONDS="2",
        PM_DNSBL_ZONES="",
        PM_DOMAIN_BLOCKLISTS="",
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()


def test_probe_error_disappears_from_status_after_recovery(
    operator: OperatorProcess, core: client.CoreV1Api, custom_objects: client.CustomObjectsApi
) -> None:
    namespace = f"status-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    port = free_port()
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmtpServer",
        "metadata": {"name": "relay"},
        "spec": {
            "hostname": "relay.status.test",
            "provider": {"relay": {"host": "127.0.0.1", "port": port, "tls": "none"}},
        },
    }

    def last_probe() -> dict[str, Any]:
        obj = custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "smtpservers", "relay"
        )
        return dict((obj.get("status") or {}).get("lastProbe") or {})

    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "smtpservers", body)
    try:
        failed = wait_for(
            lambda: (p := last_probe()).get("error") and p,
            timeout=60,
            what="a probe of the closed port with its error",
        )
        assert "banner" not in failed
        with SinkServer(port):
            recovered = wait_for(
                lambda: (p := last_probe()).get("banner") and p,
                timeout=60,
                what="a probe that got the banner",
            )
        assert recovered["banner"].startswith("220")
        assert "error" not in recovered, recovered
    finally:
        custom_objects.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "smtpservers", "relay"
        )
        wait_for(
            lambda: (
                not custom_objects.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "smtpservers"
                )["items"]
            ),
            timeout=60,
            what="SmtpServer deleted",
        )
        core.delete_namespace(namespace)
