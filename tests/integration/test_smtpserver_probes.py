"""The probes against real servers: Postfix with STARTTLS, Knot holding PTR, A and a blocklist."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.asyncresolver
import pytest
from kubernetes import client

from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.operator.probes import dnsbl, rdns, smtp
from penguinmails.operator.probes.resolver import make_resolver
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.smtpserver_helpers import (
    PLURAL,
    condition,
    delete_and_wait_gone,
    ensure_namespace,
    get,
    put_secret,
    wait_condition,
)

pytestmark = pytest.mark.integration

HOST_OK = "mx-ok.example.test"
HOST_BAD = "mx-bad.example.test"
FORWARD = minimal_zone(
    "example.test",
    extra="""
mx-ok  IN A 127.0.0.1
mx-bad IN A 127.0.0.9
""",
)
REVERSE = minimal_zone(
    "0.0.127.in-addr.arpa",
    nameservers=("ns1.example.test.",),
    extra=f"""
1 IN PTR {HOST_OK}.
2 IN PTR {HOST_BAD}.
""",
)
# A test blocklist: 127.0.0.2 listed as SBL, 127.0.0.3 refused (public-resolver error code).
BLOCKLIST = minimal_zone(
    "zen.bl.test",
    extra="""
2.0.0.127 IN A 127.0.0.2
2.0.0.127 IN TXT "listed for testing"
3.0.0.127 IN A 127.255.255.254
""",
)
DOMAIN_LIST = minimal_zone("dbl.bl.test", extra=f"{HOST_BAD} IN A 127.0.1.2\n")
# Spamhaus' Data Query Service as a key's zones (served by Knot: the lookup path is the real one),
# and a list that refuses every query, as Spamhaus does through a public resolver.
DQS_KEY = "pmdqs7key0secret"
DQS_ZEN = minimal_zone(f"{DQS_KEY}.zen.dq.spamhaus.net", extra="2.0.0.127 IN A 127.0.0.2\n")
DQS_DBL = minimal_zone(f"{DQS_KEY}.dbl.dq.spamhaus.net", extra=f"{HOST_BAD} IN A 127.0.1.2\n")
REFUSING = minimal_zone("refusing.bl.test", extra="* IN A 127.255.255.254\n")


@pytest.fixture(scope="module")
def base_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pm-probes-") as path:
        yield Path(path)


@pytest.fixture(scope="module")
def knot(base_dir: Path) -> Iterator[KnotServer]:
    zones = {
        "example.test": FORWARD,
        "0.0.127.in-addr.arpa": REVERSE,
        "zen.bl.test": BLOCKLIST,
        "dbl.bl.test": DOMAIN_LIST,
        f"{DQS_KEY}.zen.dq.spamhaus.net": DQS_ZEN,
        f"{DQS_KEY}.dbl.dq.spamhaus.net": DQS_DBL,
        "refusing.bl.test": REFUSING,
    }
    with KnotServer(base_dir, zones=zones) as server:
        yield server


@pytest.fixture(scope="module")
def postfix(base_dir: Path) -> Iterator[PostfixServer]:
    with PostfixServer(base_dir, tls=True, hostname=HOST_OK) as server:
        yield server


def resolver(knot: KnotServer) -> dns.asyncresolver.Resolver:
    return make_resolver(f"{knot.address}:{knot.port}", timeout=2.0)


async def test_postfix_with_starttls_is_reachable_and_its_certificate_reported(
    postfix: PostfixServer,
) -> None:
    result = await smtp.probe_smtp(
        "127.0.0.1", postfix.port, mode="starttls", helo_name=HOST_OK, server_name=HOST_OK
    )
    assert result.reachable, result.message
    assert result.banner is not None and result.banner.startswith("220 ")
    assert result.tls is True and result.tls_version is not None
    assert "STARTTLS".lower() in result.extensions
    assert result.certificate is not None and result.certificate.dns_names == [HOST_OK]
    # Self-signed: reported, but opportunistic TLS between MTAs still works.
    assert result.certificate_verified is False and result.certificate_problem
    assert "not verified" in result.message


async def test_postfix_certificate_verifies_against_its_own_ca(postfix: PostfixServer) -> None:
    assert postfix.tls_cert is not None
    ca = Path(postfix.tls_cert).read_bytes().decode()  # noqa: ASYNC240 - a small local file
    result = await smtp.probe_smtp(
        "127.0.0.1",
        postfix.port,
        mode="starttls",
        server_name=HOST_OK,
        ca_pem=ca,
    )
    assert result.reachable and result.certificate_verified is True, result.message


async def test_plain_server_asked_for_starttls_is_not_reachable(base_dir: Path) -> None:
    with PostfixServer(base_dir, name="plain", hostname=HOST_OK) as plain:
        result = await smtp.probe_smtp("127.0.0.1", plain.port, mode="starttls")
        assert not result.reachable and result.tls is False
        assert "does not offer STARTTLS" in result.message
        # Without TLS required, the same server answers.
        assert (await smtp.probe_smtp("127.0.0.1", plain.port, mode="none")).reachable


async def test_nothing_listening_is_not_reachable() -> None:
    result = await smtp.probe_smtp("127.0.0.1", 9, mode="starttls", timeout=2)
    assert not result.reachable and result.banner is None
    assert "no SMTP greeting" in result.message


async def test_forward_confirmed_reverse_dns(knot: KnotServer) -> None:
    result = await rdns.check_fcrdns("127.0.0.1", HOST_OK, resolver(knot))
    assert result.confirmed, result.message
    assert result.ptr_names == [HOST_OK]


async def test_ptr_that_does_not_confirm_forward_names_both_sides(knot: KnotServer) -> None:
    result = await rdns.check_fcrdns("127.0.0.2", HOST_BAD, resolver(knot))
    assert not result.confirmed
    assert HOST_BAD in result.message and "127.0.0.9" in result.message
    assert "127.0.0.2" in result.message


async def test_ptr_naming_another_host_and_missing_ptr(knot: KnotServer) -> None:
    wrong = await rdns.check_fcrdns("127.0.0.1", HOST_BAD, resolver(knot))
    assert not wrong.confirmed and HOST_OK in wrong.message
    missing = await rdns.check_fcrdns("127.0.0.7", HOST_OK, resolver(knot))
    assert not missing.confirmed and "no PTR" in missing.message


async def test_blocklists_listed_unknown_and_clean(knot: KnotServer) -> None:
    zones = dnsbl.blocklists(["zen.bl.test"])
    (listed,) = await dnsbl.check_ip("127.0.0.2", zones, resolver(knot))
    assert listed.status is dnsbl.Listing.LISTED and listed.codes == ["127.0.0.2"]
    assert "zen.bl.test" in listed.describe() and "127.0.0.2 SBL" in listed.describe()
    (error,) = await dnsbl.check_ip("127.0.0.3", zones, resolver(knot))
    assert error.status is dnsbl.Listing.UNKNOWN and "public resolver" in error.detail
    (clean,) = await dnsbl.check_ip("127.0.0.1", zones, resolver(knot))
    assert clean.status is dnsbl.Listing.NOT_LISTED
    (domain,) = await dnsbl.check_domain(
        HOST_BAD, dnsbl.blocklists(["dbl.bl.test"]), resolver(knot)
    )
    assert domain.status is dnsbl.Listing.LISTED and domain.meanings == ["spam domain"]


async def test_unreachable_resolver_is_unknown_never_listed() -> None:
    dead = make_resolver("127.0.0.1:9", timeout=0.5)
    (result,) = await dnsbl.check_ip("127.0.0.2", dnsbl.blocklists(["zen.bl.test"]), dead)
    assert result.status is dnsbl.Listing.UNKNOWN
    reverse = await rdns.check_fcrdns("127.0.0.1", HOST_OK, dead)
    assert reverse.error is not None and not reverse.confirmed


# -- the controller probing relay SmtpServers --------------------------------------------------

NS = "smtp-probes"


def relay_body(name: str, hostname: str, host: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmtpServer",
        "metadata": {"name": name},
        "spec": {
            "hostname": hostname,
            "provider": {"relay": {"host": host, "port": port, "tls": "starttls"}},
        },
    }


@pytest.fixture(scope="module")
def probing_operator(
    operator_process: OperatorFactory,
    core: client.CoreV1Api,
    crds_installed: list[str],
    knot: KnotServer,
) -> Iterator[OperatorProcess]:
    ensure_namespace(core, NS)
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNSBL_ZONES="zen.bl.test",
        PM_DOMAIN_BLOCKLISTS="dbl.bl.test",
        PM_SMTP_POLL_SECONDS="1",
        PM_SMTP_PROBE_SECONDS="2",
        PM_SMTP_PROBE_TIMEOUT_SECONDS="3",
    )
    yield handle
    handle.stop()


def test_relay_through_postfix_with_starttls_is_ready(
    probing_operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    postfix: PostfixServer,
) -> None:
    body = relay_body("relay-ok", HOST_OK, "127.0.0.1", postfix.port)
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    obj = wait_condition(custom_objects, NS, "relay-ok", "Ready", "True", timeout=60)
    status = obj["status"]
    assert condition(obj, "Reachable")["reason"] == "SmtpAnswered"
    assert "TLS" in condition(obj, "Reachable")["message"]
    assert condition(obj, "ReverseDNSVerified")["status"] == "True"
    assert condition(obj, "NotListed")["status"] == "True"
    assert status["ipAddress"] == "127.0.0.1" and status["phase"] == "Ready"
    assert status["lastProbe"]["tls"] is True and status["lastProbe"]["banner"].startswith("220")
    delete_and_wait_gone(custom_objects, NS, "relay-ok")


def test_unconfirmed_ptr_and_listing_are_named_in_conditions_and_events(
    probing_operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    postfix: PostfixServer,
) -> None:
    # 127.0.0.2: PTR mx-bad.example.test, which resolves to 127.0.0.9; listed as SBL.
    body = relay_body("relay-bad", HOST_BAD, "127.0.0.2", postfix.port)
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    obj = wait_condition(custom_objects, NS, "relay-bad", "NotListed", "False", timeout=60)
    rdns_condition = condition(obj, "ReverseDNSVerified")
    assert rdns_condition["status"] == "False"
    assert HOST_BAD in rdns_condition["message"] and "127.0.0.9" in rdns_condition["message"]
    listed = condition(obj, "NotListed")["message"]
    assert "zen.bl.test" in listed and "127.0.0.2 SBL" in listed
    assert "dbl.bl.test" in listed and "spam domain" in listed
    assert condition(obj, "Reachable")["status"] == "False"
    assert condition(obj, "Ready")["status"] == "False"
    wait_for(
        lambda: (
            (get(custom_objects, NS, "relay-bad") or {}).get("status", {}).get("phase")
            == "Degraded"
        ),
        timeout=30,
        what="phase Degraded",
    )
    assert obj["status"]["lastProbe"]["listedOn"] == ["zen.bl.test", "dbl.bl.test"]

    def reasons() -> set[str]:
        events = core.list_namespaced_event(NS).items
        return {e.reason for e in events if e.involved_object.name == "relay-bad"}

    wait_for(lambda: {"Listed", "NotForwardConfirmed"} <= reasons(), timeout=30, what="events")
    delete_and_wait_gone(custom_objects, NS, "relay-bad")


def test_relay_credentials_and_ca_come_from_secrets(
    probing_operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    postfix: PostfixServer,
) -> None:
    body = relay_body("relay-auth", HOST_OK, "127.0.0.1", postfix.port)
    relay = body["spec"]["provider"]["relay"]
    relay["credentialsSecretRef"] = {"name": "relay-login"}
    relay["caSecretRef"] = {"name": "relay-ca", "key": "ca.crt"}
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    obj = wait_condition(
        custom_objects, NS, "relay-auth", "Provisioned", "False", reason="SecretNotFound"
    )
    message = condition(obj, "Provisioned")["message"]
    assert "spec.provider.relay.credentialsSecretRef" in message and "relay-login" in message
    put_secret(core, NS, "relay-login", {"username": "u", "password": "secret-pw"})
    assert postfix.tls_cert is not None
    put_secret(core, NS, "relay-ca", {"ca.crt": Path(postfix.tls_cert).read_text()})
    obj = wait_condition(custom_objects, NS, "relay-auth", "Ready", "True", timeout=60)
    # Verified against the CA from the Secret: no "not verified" remark.
    assert "not verified" not in condition(obj, "Reachable")["message"]
    assert "secret-pw" not in str(obj)
    delete_and_wait_gone(custom_objects, NS, "relay-auth")


def test_unknown_blocklist_only_warns_and_dqs_key_is_used_but_never_shown(
    probing_operator: OperatorProcess,
    operator_process: OperatorFactory,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    knot: KnotServer,
    postfix: PostfixServer,
) -> None:
    """A list that will not answer (here: one answering Spamhaus' "public resolver" code) says
    nothing about the IP: Ready stays True with a warning. Spamhaus' lists go through the DQS
    key's zones, and the key appears nowhere."""
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNSBL_ZONES="zen.spamhaus.org,refusing.bl.test",
        PM_DOMAIN_BLOCKLISTS="dbl.spamhaus.org",
        PM_SPAMHAUS_DQS_KEY=DQS_KEY,
        PM_SMTP_POLL_SECONDS="1",
        PM_SMTP_PROBE_SECONDS="2",
        PM_SMTP_PROBE_TIMEOUT_SECONDS="3",
    )
    try:
        warn = relay_body("relay-warn", HOST_OK, "127.0.0.1", postfix.port)
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, warn)
        listed = relay_body("relay-dqs", HOST_BAD, "127.0.0.2", postfix.port)
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, listed)

        obj = wait_condition(custom_objects, NS, "relay-warn", "Ready", "True", timeout=60)
        not_listed = condition(obj, "NotListed")
        assert (not_listed["status"], not_listed["reason"]) == ("Unknown", "LookupFailed")
        assert "refusing.bl.test: unknown" in not_listed["message"]
        assert "public resolver" in not_listed["message"]
        assert "zen.dq.spamhaus.net" not in not_listed["message"]  # asked, and not listed
        ready = condition(obj, "Ready")
        assert ready["reason"] == "ReadyWithWarnings" and "refusing.bl.test" in ready["message"]
        assert obj["status"]["phase"] == "Ready"

        obj = wait_condition(custom_objects, NS, "relay-dqs", "NotListed", "False", timeout=60)
        message = condition(obj, "NotListed")["message"]
        assert "zen.dq.spamhaus.net: listed (127.0.0.2 SBL" in message
        assert "dbl.dq.spamhaus.net: listed (127.0.1.2 spam domain)" in message
        assert obj["status"]["lastProbe"]["listedOn"] == [
            "zen.dq.spamhaus.net",
            "dbl.dq.spamhaus.net",
        ]
        assert condition(obj, "Ready")["status"] == "False"  # a listing still blocks

        events = " ".join(f"{e.reason} {e.message}" for e in core.list_namespaced_event(NS).items)
        for name in ("relay-warn", "relay-dqs"):
            assert DQS_KEY not in str(get(custom_objects, NS, name))
        assert DQS_KEY not in events
        assert DQS_KEY not in handle.log()
        delete_and_wait_gone(custom_objects, NS, "relay-warn")
        delete_and_wait_gone(custom_objects, NS, "relay-dqs")
    finally:
        handle.stop()
        probing_operator.start()
