"""A SendingDomain published through the PowerDNS HTTP API (sqlite backend), end to end."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.devstack.dnszones import minimal_zone
from penguinmails.devstack.powerdns import PowerDnsServer
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for

pytestmark = pytest.mark.integration

ZONE = "pdns.test"
PLURAL = "sendingdomains"
FOREIGN = "ms-verification=keep-me"


@pytest.fixture(scope="module")
def pdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDnsServer]:
    zones = {ZONE: minimal_zone(ZONE)}
    with PowerDnsServer(tmp_path_factory.mktemp("pdns"), zones=zones) as server:
        yield server


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, pdns: PowerDnsServer) -> Iterator[OperatorProcess]:
    handle = operator_process(
        PM_DNS_RESOLVER=f"{pdns.address}:{pdns.port}",
        PM_DNS_NAMESERVER_PORT=str(pdns.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS="2",
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()


def txt(pdns: PowerDnsServer, name: str) -> list[str]:
    query = dns.message.make_query(name + ".", "TXT")
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, pdns.address, port=pdns.port, timeout=2)
    return sorted(b"".join(r.strings).decode() for rrset in response.answer for r in rrset)


def add_foreign(pdns: PowerDnsServer, name: str) -> None:
    response = httpx.patch(
        f"{pdns.api_url}/api/v1/servers/localhost/zones/{ZONE}.",
        headers={"X-API-Key": pdns.api_key},
        json={
            "rrsets": [
                {
                    "name": f"{name}.",
                    "type": "TXT",
                    "ttl": 60,
                    "changetype": "REPLACE",
                    "records": [{"content": f'"{FOREIGN}"', "disabled": False}],
                }
            ]
        },
    )
    assert response.status_code == 204, response.status_code


def test_powerdns_publish_verify_delete(
    operator: OperatorProcess,
    pdns: PowerDnsServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    namespace = f"sdp-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    domain = f"{namespace}.{ZONE}"
    add_foreign(pdns, domain)
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "pdns"},
            "data": {"apiKey": base64.b64encode(pdns.api_key.encode()).decode()},
        },
    )
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SendingDomain",
        "metadata": {"name": "main"},
        "spec": {
            "domain": domain,
            "zone": ZONE,
            "dnsProvider": {
                "type": "powerdns",
                "powerdns": {"apiUrl": pdns.api_url},
                "credentialsSecretRef": {"name": "pdns", "key": "apiKey"},
            },
            "mx": {"enabled": False},
            "verifyInterval": "2s",
        },
    }
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def ready() -> dict[str, Any] | None:
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "main")
        conditions = (obj.get("status") or {}).get("conditions") or []
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return dict(obj) if ok else None

    obj = wait_for(ready, timeout=90, what="SendingDomain Ready through PowerDNS")
    records = obj["status"]["records"]
    dkim = [r for r in records if r["purpose"] == "dkim"]
    assert len(dkim) == 2
    for record in dkim:  # the 2048-bit key is one record of several strings
        assert txt(pdns, record["name"]) == [record["value"]]
    spf = next(r for r in records if r["purpose"] == "spf")
    assert txt(pdns, domain) == sorted([FOREIGN, spf["value"]])
    assert pdns.api_key not in str(obj)

    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "main")

    def gone() -> bool:
        try:
            custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "main")
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone, timeout=60, what="SendingDomain deleted")
    assert txt(pdns, domain) == [FOREIGN]
    for record in records:
        if record["name"] != domain:
            assert txt(pdns, record["name"]) == [], record["name"]
    core.delete_namespace(namespace)
