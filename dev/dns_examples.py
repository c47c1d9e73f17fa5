"""`make run`'s DNS: a local Knot server and an example SendingDomain published to it.

The example Tenant `pebble` gets a SendingDomain `mail.pebble.test` in its namespace, published
with RFC 2136 + TSIG to a private Knot server that also serves as the operator's resolver, so the
whole path (keys, records, verification, rotation) runs locally. The SendingDomain is built here
rather than in examples/ because the server's port is only known once it has started.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from kubernetes import client

from penguinmails.devstack.dnszones import minimal_zone
from penguinmails.devstack.knot import KnotServer
from penguinmails.devstack.stack import apply_documents

ZONE = "pebble.test"
TENANT_NAMESPACE = "tenant-pebble"
ZONES = {ZONE: minimal_zone(ZONE, ttl=60)}


def operator_env(knot: KnotServer) -> dict[str, str]:
    """PM_DNS_* for an operator that verifies against the local server (short TTL for demos)."""
    return {
        "PM_DNS_RESOLVER": f"{knot.address}:{knot.port}",
        "PM_DNS_NAMESERVER_PORT": str(knot.port),
        "PM_DNS_TTL_SECONDS": "30",
        "PM_DNS_TICK_SECONDS": "10",
    }


def rfc2136_provider(knot: KnotServer, ref: str = "tsig") -> dict[str, Any]:
    """A SendingDomain's `dnsProvider` publishing to `knot` with the TSIG key in Secret
    `ref` (key `secret`)."""
    return {
        "type": "rfc2136",
        "rfc2136": {"server": knot.address, "port": knot.port, "tsigKeyName": knot.tsig.name},
        "credentialsSecretRef": {"name": ref, "key": "secret"},
    }


def documents(knot: KnotServer, namespace: str = TENANT_NAMESPACE) -> list[dict[str, Any]]:
    secret = base64.b64encode(knot.tsig.secret.encode()).decode()
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "dns-tsig", "namespace": namespace},
            "type": "Opaque",
            "data": {"secret": secret},
        },
        {
            "apiVersion": "penguinmails.io/v1alpha1",
            "kind": "SendingDomain",
            "metadata": {"name": "pebble-mail", "namespace": namespace},
            "spec": {
                "domain": f"mail.{ZONE}",
                "zone": ZONE,
                "dnsProvider": rfc2136_provider(knot, "dns-tsig"),
                "dmarc": {"policy": "none", "rua": [f"dmarc@{ZONE}"]},
                "mx": {"enabled": False},
                "verifyInterval": "1m",
            },
        },
    ]


def publish_examples(api: client.ApiClient, knot: KnotServer, timeout: float = 120.0) -> bool:
    """Apply the example once the Tenant operator has made its namespace; False on timeout."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(TENANT_NAMESPACE)
            break
        except client.ApiException as error:
            if error.status != 404:
                raise
        time.sleep(0.5)
    else:
        return False
    apply_documents(api, documents(knot))
    return True
