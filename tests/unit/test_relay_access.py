"""Which relay the plan names for an SmtpServer, seen from the tenant's namespace."""

from __future__ import annotations

from typing import Any

from penguinmails.common.db.blocks import pool_server_name
from penguinmails.operator.relay_access import CA_KEY, plan_relay

TENANT_NS = "tenant-acme"


def server(namespace: str, provider: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "mx1", "namespace": namespace, "uid": "u-1"},
        "spec": {"hostname": "mx1.acme.example", "provider": provider},
        "status": {"ipAddress": "203.0.113.7"},
    }


def test_provisioned_server_is_reached_by_hostname_with_its_relay_user() -> None:
    hostwinds = {"hostwinds": {"apiKeySecretRef": {"name": "hw", "key": "k"}}}
    relay = plan_relay(server(TENANT_NS, hostwinds), TENANT_NS, daily_limit=40)
    assert (relay.host, relay.port, relay.tls) == ("mx1.acme.example", 587, "starttls")
    assert relay.credentials_secret == "mx1-relay" and relay.daily_limit == 40
    # A shared-pool server: the copy in the tenant's namespace, never the platform's Secret.
    relay = plan_relay(server("penguinmails", hostwinds), TENANT_NS, daily_limit=None)
    assert relay.host == "mx1.acme.example" and relay.credentials_secret == "pool-mx1-relay"


def test_a_pool_server_is_named_by_its_namespace_so_no_tenant_server_can_share_its_name() -> None:
    provider = {"relay": {"host": "smtp.relay.example"}}
    own = plan_relay(server(TENANT_NS, provider), TENANT_NS, daily_limit=None)
    pooled = plan_relay(server("penguinmails", provider), TENANT_NS, daily_limit=None)
    # Both SmtpServers are called mx1; only the pool's carries the name its strikes count under.
    assert own.name == "mx1"
    assert pooled.name == pool_server_name("penguinmails", "mx1") == "penguinmails/mx1"


def test_external_relays_keep_their_refs_at_home_and_use_copies_from_the_pool() -> None:
    provider = {
        "relay": {
            "host": "smtp.relay.example",
            "port": 465,
            "tls": "tls",
            "credentialsSecretRef": {"name": "creds"},
            "caSecretRef": {"name": "ca", "key": "root.pem"},
        }
    }
    own = plan_relay(server(TENANT_NS, provider), TENANT_NS, daily_limit=None)
    assert (own.host, own.port, own.tls) == ("smtp.relay.example", 465, "tls")
    assert (own.credentials_secret, own.ca_secret, own.ca_key) == ("creds", "ca", "root.pem")
    pooled = plan_relay(server("penguinmails", provider), TENANT_NS, daily_limit=None)
    assert (pooled.credentials_secret, pooled.ca_secret, pooled.ca_key) == (
        "pool-mx1-relay",
        "pool-mx1-relay",
        CA_KEY,
    )
    bare = plan_relay(
        server("penguinmails", {"relay": {"host": "10.0.0.1"}}), TENANT_NS, daily_limit=None
    )
    assert bare.credentials_secret is None and bare.ca_secret is None


def test_server_weight_reaches_the_plan() -> None:
    provider = {"relay": {"host": "smtp.relay.example"}}
    assert plan_relay(server(TENANT_NS, provider), TENANT_NS, daily_limit=None).weight == 100
    drained = server(TENANT_NS, provider)
    drained["spec"]["weight"] = 0
    assert plan_relay(drained, TENANT_NS, daily_limit=None).weight == 0
