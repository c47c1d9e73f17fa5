"""The SendingDomain controller against the real control plane and a real Knot DNS server.

Short TTL (1 s) and a 1 s timer tick keep the DKIM activation and rotation steps quick; the
records are checked with independent tools: checkdmarc for SPF and DMARC, dkimpy for signatures.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

import checkdmarc.dmarc
import checkdmarc.spf
import dkim
import dns.flags
import dns.message
import dns.query
import dns.resolver
import dns.tsig
import dns.update
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.common.dkim.keys import load_keys_from_secret, signing_keys
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.operator.dns.records import txt_rdata_text
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_dns_providers import TINY, TINY_MAX_BYTES, SizeLimitedKnot

pytestmark = pytest.mark.integration

ZONE = "example.test"
FOREIGN_TXT = "google-site-verification=foreign-record"
PLURAL = "sendingdomains"
DUAL_STACK = "dualstack.test"


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    extra = (
        f'@ IN TXT "{FOREIGN_TXT}"\n'
        "@ IN MX 50 foreign-mx.example.test.\n"
        "foreign-mx IN A 127.0.0.9\n"
        'relay IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
        # A chain of includes 12 deep: over SPF's 10-lookup limit.
        + "".join(f'chain{i} IN TXT "v=spf1 include:chain{i + 1}.{ZONE} -all"\n' for i in range(12))
    )
    zones = {
        ZONE: minimal_zone(ZONE, extra=extra),
        TINY: minimal_zone(TINY),
        # ns1 also has an IPv6 address nothing answers on (::1 never leaves the machine), as a
        # dual-stack nameserver looks from an IPv4-only cluster.
        DUAL_STACK: minimal_zone(DUAL_STACK, extra="ns1 IN AAAA ::1\n"),
    }
    # TINY is too small for a domain's records: Knot refuses the update (DNSUpdateRefused).
    with SizeLimitedKnot(tmp_path_factory.mktemp("knot"), zones, {TINY: TINY_MAX_BYTES}) as server:
        yield server


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, knot: KnotServer) -> Iterator[OperatorProcess]:
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS="2",
    )
    yield handle
    handle.stop()
    # Handler failures are expected here (wrong TSIG key, missing Secret); crashes are not.
    log = handle.log()
    assert "Traceback" not in log and "Unhandled" not in log, log[-4000:]


@pytest.fixture()
def namespace(
    core: client.CoreV1Api, custom_objects: client.CustomObjectsApi, operator: OperatorProcess
) -> Iterator[str]:
    name = f"sd-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    # Delete our SendingDomains while this module's operator (and DNS server) still runs, so
    # their finalizers complete and nothing is left for later modules.
    custom_objects.delete_collection_namespaced_custom_object(GROUP, VERSION, name, PLURAL)
    wait_for(
        lambda: (
            not custom_objects.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL)["items"]
        ),
        timeout=60,
        what=f"SendingDomains in {name} deleted",
    )
    core.delete_namespace(name)


def tsig_secret(core: client.CoreV1Api, namespace: str, secret: str) -> None:
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "tsig"},
            "data": {"secret": base64.b64encode(secret.encode()).decode()},
        },
    )


def domain_body(name: str, domain: str, knot: KnotServer, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SendingDomain",
        "metadata": {"name": name},
        "spec": {
            "domain": domain,
            "zone": ZONE,
            "dnsProvider": knot.rfc2136_provider(),
            "spf": {"includes": ["relay.example.test"]},
            "dmarc": {"policy": "none", "rua": ["dmarc@example.test"]},
            "mx": {"enabled": False},
            "dkim": {"retireAfter": "2s"},
            "verifyInterval": "2s",
            **spec,
        },
    }


def get(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return {}


def txt(knot: KnotServer, name: str) -> list[str]:
    query = dns.message.make_query(name + ".", "TXT")
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, knot.address, port=knot.port, timeout=2)
    return [b"".join(rdata.strings).decode() for rrset in response.answer for rdata in rrset]


def dkim_dns(knot: KnotServer) -> Any:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        values = txt(knot, name.decode().rstrip("."))
        return values[0].encode() if values else b""

    return lookup


def sign_and_verify(knot: KnotServer, domain: str, secret_data: dict[str, str]) -> list[str]:
    """Sign with every signing key of the Secret; return the selectors that verified."""
    message = EmailMessage()
    message["From"] = f"sales@{domain}"
    message["To"] = "someone@example.org"
    message["Subject"] = "hello"
    message.set_content("Hello from PenguinMails.\n")
    raw = message.as_bytes()
    verified = []
    for key in signing_keys(load_keys_from_secret(secret_data)):
        signature = dkim.sign(
            raw,
            key.selector.encode(),
            domain.encode(),
            key.dkimpy_private_key(),
            signature_algorithm=(
                b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
            ),
            include_headers=[b"from", b"to", b"subject"],
        )
        if dkim.verify(signature + raw, dnsfunc=dkim_dns(knot)):
            verified.append(key.selector)
    return verified


def local_resolver(knot: KnotServer) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [knot.address]
    resolver.port = knot.port
    return resolver


def add_foreign_txt(knot: KnotServer, name: str, value: str) -> None:
    update = dns.update.UpdateMessage(
        ZONE + ".", keyring=knot.tsig.keyring(), keyname=knot.tsig.key_name
    )
    update.add(name + ".", 60, "TXT", f'"{value}"')
    assert dns.query.tcp(update, knot.address, port=knot.port, timeout=3).rcode() == 0


def delete_txt_behind_our_back(knot: KnotServer, name: str) -> None:
    update = dns.update.UpdateMessage(
        ZONE + ".", keyring=knot.tsig.keyring(), keyname=knot.tsig.key_name
    )
    update.delete(name + ".", "TXT")
    assert dns.query.tcp(update, knot.address, port=knot.port, timeout=3).rcode() == 0


def wait_ready(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get(api, namespace, name)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    return dict(wait_for(ready, timeout=90, what=f"SendingDomain {name} Ready"))


def test_publish_verify_repair_rotate_delete(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    domain = f"{namespace}.{ZONE}"
    tsig_secret(core, namespace, knot.tsig.secret)
    # Someone else's records at the very names we publish at.
    add_foreign_txt(knot, domain, FOREIGN_TXT)
    add_foreign_txt(knot, f"_dmarc.{domain}", "not-a-dmarc-record")
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, domain_body("main", domain, knot)
    )
    obj = wait_ready(custom_objects, namespace, "main")
    status = obj["status"]
    assert all(r["verified"] and r["published"] for r in status["records"])
    assert {c["type"] for c in status["conditions"]} >= {
        "Ready",
        "DKIMKeyReady",
        "DNSPublished",
        "DNSVerified",
    }

    # SPF and DMARC pass an independent checker pointed at the local server.
    resolver = local_resolver(knot)
    spf = checkdmarc.spf.check_spf(domain, resolver=resolver)
    assert spf["valid"] is True, spf
    assert spf["dns_lookups"] == 1  # the include; ip4/ip6 cost none
    assert "include:relay.example.test" in spf["record"]
    dmarc = checkdmarc.dmarc.check_dmarc(domain, resolver=resolver, ignore_unrelated_records=True)
    assert "error" not in dmarc, dmarc
    assert dmarc["tags"]["p"]["value"] == "none"

    # A message signed with the Secret's keys verifies against the published records (both).
    secret = core.read_namespaced_secret("main-dkim", namespace)
    verified = sign_and_verify(knot, domain, secret.data)
    assert len(verified) == 2, verified
    assert {s.split("-")[1] for s in verified} == {"rsa", "ed"}

    # A record deleted behind our back comes back.
    selector = verified[0]
    delete_txt_behind_our_back(knot, f"{selector}._domainkey.{domain}")
    wait_for(
        lambda: txt(knot, f"{selector}._domainkey.{domain}"),
        timeout=30,
        what="the deleted DKIM record to be published again",
    )

    # Rotate now: every Secret observed along the way signs with keys DNS serves.
    custom_objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "main",
        {"metadata": {"annotations": {"penguinmails.io/rotate-dkim": "now"}}},
    )

    def rotated() -> bool:
        data = core.read_namespaced_secret("main-dkim", namespace).data
        signing = {k.selector for k in signing_keys(load_keys_from_secret(data))}
        assert set(sign_and_verify(knot, domain, data)) == signing
        return bool(signing) and not signing & set(verified)

    wait_for(rotated, timeout=60, interval=0.2, what="new DKIM keys to sign")

    def retiring() -> set[str]:
        selectors = get(custom_objects, namespace, "main")["status"]["dkim"]["selectors"]
        return {s["selector"] for s in selectors if s["state"] == "Retiring"}

    wait_for(lambda: retiring() == set(verified), timeout=30, what="old selectors Retiring")

    # Retired selectors stay published for retireAfter, then are revoked (empty p=), then go.
    def served(selector: str) -> list[str]:
        return txt(knot, f"{selector}._domainkey.{domain}")

    for name in verified:
        revoked = "v=DKIM1; k=" + ("rsa" if "-rsa-" in name else "ed25519") + "; p="
        wait_for(partial(lambda n, r: served(n) == [r], name, revoked), what=f"{name} revoked")
    for name in verified:
        wait_for(partial(lambda n: served(n) == [], name), what=f"{name} removed")
    data = core.read_namespaced_secret("main-dkim", namespace).data
    assert not any(f"{name}.pem" in data for name in verified), "revoked private keys deleted"

    # An update replaces our record, and only ours.
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "main", {"spec": {"dmarc": {"policy": "quarantine"}}}
    )
    quarantine = "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:dmarc@example.test"
    wait_for(
        lambda: sorted(txt(knot, f"_dmarc.{domain}")) == ["not-a-dmarc-record", quarantine],
        timeout=30,
        what="our DMARC record replaced, the foreign one kept",
    )

    # Foreign records at the same names survived; deletion removes ours and only ours.
    assert FOREIGN_TXT in txt(knot, ZONE)
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "main")

    def gone() -> bool:
        try:
            get(custom_objects, namespace, "main")
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone, timeout=60, what="SendingDomain deleted")
    assert txt(knot, domain) == [FOREIGN_TXT]
    assert txt(knot, f"_dmarc.{domain}") == ["not-a-dmarc-record"]
    assert txt(knot, f"_pm-owner.{domain}") == []
    for name in verified:
        assert txt(knot, f"{name}._domainkey.{domain}") == []
    assert FOREIGN_TXT in txt(knot, ZONE)


def test_nameserver_with_an_unreachable_ipv6_address_still_verifies(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    domain = f"{namespace}.{DUAL_STACK}"
    tsig_secret(core, namespace, knot.tsig.secret)
    body = domain_body("dual", domain, knot, zone=DUAL_STACK)
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    obj = wait_ready(custom_objects, namespace, "dual")
    assert condition(obj, "DNSVerified")["status"] == "True"
    assert all(r["verified"] for r in obj["status"]["records"]), obj["status"]["records"]


def test_wrong_tsig_key_is_a_condition(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    domain = f"{namespace}.{ZONE}"
    tsig_secret(core, namespace, base64.b64encode(b"x" * 32).decode())
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, domain_body("bad", domain, knot)
    )

    def refused() -> dict[str, Any] | None:
        ready = condition(get(custom_objects, namespace, "bad"), "Ready")
        return ready if ready.get("reason") == "TSIGRejected" else None

    ready = wait_for(refused, timeout=60, what="Ready=False TSIGRejected")
    assert ready["status"] == "False"
    assert "credentialsSecretRef" in ready["message"]
    assert base64.b64encode(b"x" * 32).decode() not in ready["message"]
    assert txt(knot, domain) == []


def test_launcher_zone_files_stay_as_written(knot: KnotServer) -> None:
    # Updates go to the journal; the zone file a test wrote is never rewritten under it.
    zone_file = Path(knot.root) / "zones" / f"{ZONE}.zone"
    assert FOREIGN_TXT in zone_file.read_text()
    assert "_pm-owner" not in zone_file.read_text()


def test_manual_provider_lists_records_and_verifies_them(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
) -> None:
    domain = f"{namespace}.{ZONE}"
    body = domain_body("manual", domain, knot, dnsProvider={"type": "manual"})
    body["spec"]["dkim"] = {"algorithms": ["ed25519"]}
    body["spec"]["mailboxes"] = [
        {"localPart": "jane", "dailyLimit": 40},
        {"localPart": "sales", "dailyLimit": 80, "warmup": {"initialPerDay": 20}},
    ]
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def listed() -> dict[str, Any] | None:
        obj = get(custom_objects, namespace, "manual")
        records = (obj.get("status") or {}).get("records") or []
        return obj if records and condition(obj, "DNSVerified").get("status") == "False" else None

    obj = wait_for(listed, timeout=60, what="records listed for the customer")
    assert condition(obj, "DNSPublished")["reason"] == "Manual"
    records = obj["status"]["records"]
    assert not any(r["published"] or r["verified"] for r in records)
    assert all("serves nothing" in r["diff"] for r in records)
    assert txt(knot, domain) == []  # nothing was published for a manual domain
    # Each mailbox's limit today; the warm-up one on its day 0 (it has sent nothing).
    assert obj["status"]["mailboxes"] == [
        {"localPart": "jane", "dailyLimit": 40},
        {"localPart": "sales", "warmupDay": 0, "dailyLimit": 20},
    ]

    # The customer creates exactly what status lists; the operator sees it on every nameserver.
    update = dns.update.UpdateMessage(
        ZONE + ".", keyring=knot.tsig.keyring(), keyname=knot.tsig.key_name
    )
    for record in records:
        update.add(record["name"] + ".", 60, "TXT", txt_rdata_text(record["value"]))
    assert dns.query.tcp(update, knot.address, port=knot.port, timeout=3).rcode() == 0
    obj = wait_ready(custom_objects, namespace, "manual")
    assert all(r["verified"] for r in obj["status"]["records"])


def wait_reason(api: client.CustomObjectsApi, namespace: str, name: str, reason: str) -> Any:
    def reached() -> dict[str, Any] | None:
        ready = condition(get(api, namespace, name), "Ready")
        return ready if ready.get("reason") == reason else None

    return wait_for(reached, timeout=60, what=f"Ready=False {reason}")


def test_spf_over_the_lookup_limit_is_refused_before_publishing(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    domain = f"{namespace}.{ZONE}"
    tsig_secret(core, namespace, knot.tsig.secret)
    body = domain_body("spf", domain, knot, spf={"includes": [f"chain0.{ZONE}"]})
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    ready = wait_reason(custom_objects, namespace, "spf", "SPFLookupLimit")
    assert ready["status"] == "False"
    assert "spec.spf.includes" in ready["message"]
    assert txt(knot, domain) == [] and txt(knot, f"_dmarc.{domain}") == []


def test_missing_credentials_secret_is_named(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
) -> None:
    domain = f"{namespace}.{ZONE}"
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, domain_body("nocreds", domain, knot)
    )
    ready = wait_reason(custom_objects, namespace, "nocreds", "CredentialsSecretMissing")
    assert "tsig" in ready["message"] and namespace in ready["message"]
    assert txt(knot, domain) == []


def spf_records(knot: KnotServer, name: str) -> list[str]:
    return [v for v in txt(knot, name) if v.lower().startswith("v=spf1")]


def test_foreign_spf_is_reported_not_doubled(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    domain = f"{namespace}.{ZONE}"
    tsig_secret(core, namespace, knot.tsig.secret)
    foreign = "v=spf1 ip4:198.51.100.7 -all"
    add_foreign_txt(knot, domain, foreign)
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, domain_body("spfdup", domain, knot)
    )
    ready = wait_reason(custom_objects, namespace, "spfdup", "SPFConflict")
    assert ready["status"] == "False"
    assert foreign in ready["message"] and "include:relay.example.test" in ready["message"]
    published = condition(get(custom_objects, namespace, "spfdup"), "DNSPublished")
    assert (published["status"], published["reason"]) == ("False", "SPFConflict")
    assert txt(knot, domain) == [foreign]  # untouched, and still the only SPF record
    assert txt(knot, f"_pm-owner.{domain}") == []

    # The customer removes their record: the next pass publishes ours.
    delete_txt_behind_our_back(knot, domain)
    obj = wait_ready(custom_objects, namespace, "spfdup")
    spf = next(r["value"] for r in obj["status"]["records"] if r["purpose"] == "spf")
    assert spf_records(knot, domain) == [spf]
    # Retried several times while it lasted, announced once.
    events = core.list_namespaced_event(namespace).items
    assert [e.reason for e in events].count("SPFConflict") == 1


def test_update_refused_by_the_server_is_a_condition(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    domain = f"{namespace}.{TINY}"
    tsig_secret(core, namespace, knot.tsig.secret)
    update = dns.update.UpdateMessage(
        TINY + ".", keyring=knot.tsig.keyring(), keyname=knot.tsig.key_name
    )
    update.add(domain + ".", 60, "TXT", f'"{FOREIGN_TXT}"')
    assert dns.query.tcp(update, knot.address, port=knot.port, timeout=3).rcode() == 0
    body = domain_body("refused", domain, knot, zone=TINY)
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    ready = wait_reason(custom_objects, namespace, "refused", "DNSUpdateRefused")
    assert ready["status"] == "False"
    assert f"zone {TINY} with REFUSED" in ready["message"]
    assert "maximum size" in ready["message"] and knot.tsig.secret not in ready["message"]
    published = condition(get(custom_objects, namespace, "refused"), "DNSPublished")
    assert (published["status"], published["reason"]) == ("False", "DNSUpdateRefused")
    assert txt(knot, domain) == [FOREIGN_TXT]  # the refused batch changed nothing


def test_manual_domain_with_a_foreign_spf_is_told_to_replace_it(
    operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
) -> None:
    domain = f"{namespace}.{ZONE}"
    add_foreign_txt(knot, domain, "v=spf1 mx -all")
    body = domain_body("manualspf", domain, knot, dnsProvider={"type": "manual"})
    body["spec"]["dkim"] = {"algorithms": ["ed25519"]}
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    ready = wait_reason(custom_objects, namespace, "manualspf", "SPFConflict")
    assert '"v=spf1 mx -all"' in ready["message"]

    # The customer does what the message says: replaces it with exactly our value.
    ours = ready["message"].split('replace it with exactly "', 1)[1].split('"', 1)[0]
    assert ours == "v=spf1 include:relay.example.test ~all"
    delete_txt_behind_our_back(knot, domain)
    add_foreign_txt(knot, domain, ours)

    def listed() -> dict[str, Any] | None:
        obj = get(custom_objects, namespace, "manualspf")
        return obj if condition(obj, "DNSPublished").get("reason") == "Manual" else None

    obj = wait_for(listed, timeout=90, what="the manual domain past the conflict")
    spf = next(r for r in obj["status"]["records"] if r["purpose"] == "spf")
    assert spf["value"] == ours and spf["verified"]
