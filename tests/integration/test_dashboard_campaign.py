"""The dashboard's campaign pages in a real browser (Debian's Chromium driven by Playwright)
against the real stack: the API as its own process serving the built dashboard, the operator
(every controller) publishing and verifying a sending domain in a private Knot server, and the
real sender program relaying through an SMTP listener on loopback.

A user creates a campaign in the form (a bad name and a template needing a field the contacts
lack first: each error under its field), previews it for a contact of the list (rendered by
the API with the sender's renderer), creates it paused, starts it and watches its progress
reach completion as the sender delivers every message; then pauses and resumes a second
campaign, and reads why it is not sending. Every page is screenshotted, checked by axe-core and
at 360 px wide without sideways scrolling."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client
from playwright.async_api import Browser, Page, expect

from penguinmails.common.db import accounts
from penguinmails.common.db.accounts import Role
from penguinmails.common.keys import MasterKeys
from penguinmails.devstack.knot import KnotServer
from penguinmails.devstack.sink import SinkServer
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    make_user,
    sign_in,
)
from tests.integration.conftest import (
    GROUP,
    VERSION,
    Cluster,
    OperatorFactory,
    OperatorProcess,
)
from tests.integration.dashboard_support import (
    PAGES,
    RESTORE_SESSION,
    SUPPRESSION_KEY,
    ZONE,
    Phases,
    browser,
    check_page,
    dashboard_api,
    goto,
    knot,
    new_page,
    sign_in_page,
)
from tests.integration.test_campaign_e2e import tenants

pytestmark = pytest.mark.integration

__all__ = [  # fixtures used by name
    "api_database_url",
    "api_kubeconfig",
    "browser",
    "dashboard_api",
    "knot",
    "tenants",
]

CONTACTS = 12
NEW_PAGES = ("campaigns", "campaigns/new")


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, knot: KnotServer) -> Iterator[OperatorProcess]:
    """Every controller, resolving through the private Knot; SMTP probes off (as in
    test_campaign_e2e: the listener is no real MTA with a reverse DNS name)."""
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS="2",
        PM_SMTP_PROBE_SECONDS="0",
        PM_UNSUBSCRIBE_URL=f"https://unsubscribe.{ZONE}/u",
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()


@pytest.fixture(scope="module")
def relay() -> Iterator[SinkServer]:
    """The SmtpServer's relay, which is also where every message ends up."""
    with SinkServer() as sink:
        yield sink


@pytest_asyncio.fixture(loop_scope="session")
async def tenant(
    dashboard_api: ApiServer,
    tenants: list[str],
    custom_objects: client.CustomObjectsApi,
    db_pool: asyncpg.Pool,
) -> TenantSetup:
    """A Tenant as a customer has one: the operator makes its namespace and row."""
    name = f"dashcamp-{os.urandom(3).hex()}"
    tenants.append(name)
    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {
                "tier": "professional",
                "contactEmail": f"ops@{ZONE}",
                "postalAddress": {"street": "1 Penguin Way", "city": "Iceberg", "country": "AQ"},
            },
        },
    )
    deadline = time.monotonic() + 90
    while (found := await accounts.tenant_by_name(db_pool, name)) is None:
        assert time.monotonic() < deadline, "the operator made no tenant row"
        await asyncio.sleep(0.5)
    return TenantSetup(found.name, found.id, found.namespace)


async def _set_up(
    api: ApiServer, token: str, tenant: TenantSetup, knot: KnotServer, relay: SinkServer
) -> None:
    """Through the API, as a customer would: contacts, the relay, the domain (published by
    RFC 2136 into Knot), until the domain's records are verified."""
    base = f"/v1/tenants/{tenant.name}"
    rows = ["email,first_name", *(f"r{i}@dest.test,R{i}" for i in range(CONTACTS))]
    async with api.client(token) as http:
        started = await http.post(
            f"{base}/contact-imports",
            params={"list": "leads"},
            content=("\n".join(rows) + "\n").encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert started.status_code == 202, started.text
        made = await http.post(
            f"{base}/smtp-servers",
            json={
                "name": "relay",
                "spec": {
                    "hostname": f"relay.{ZONE}",
                    "provider": {"relay": {"host": relay.host, "port": relay.port, "tls": "none"}},
                },
            },
        )
        assert made.status_code == 201, made.text
        made = await http.post(
            f"{base}/sending-domains",
            json={
                "name": "dash",
                "spec": {
                    "domain": ZONE,
                    "dnsProvider": knot.rfc2136_provider(),
                    "smtpServerRefs": [{"name": "relay"}],
                    "mx": {"enabled": False},
                    "dmarc": {"policy": "none"},
                    "verifyInterval": "2s",
                },
            },
        )
        assert made.status_code == 201, made.text
        deadline = time.monotonic() + 120
        while True:
            records = (await http.get(f"{base}/sending-domains/dash")).json().get("status", {})
            found = records.get("records") or []
            if found and all(r["verified"] for r in found):
                break
            assert time.monotonic() < deadline, f"the domain's records never verified: {records}"
            await asyncio.sleep(1)
        job = started.json()
        while job["state"] == "running":
            job = (await http.get(f"{base}/contact-imports/{job['id']}")).json()
        assert job["state"] == "succeeded" and job["imported"] == CONTACTS, job


def _sender(
    tenant: TenantSetup, cluster: Cluster, postgres_dsn: str, redis_url: str, log: Path
) -> subprocess.Popen[bytes]:
    """The real sender program for the tenant, as test_campaign_e2e runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"],
        env={
            **os.environ,
            "PM_DATABASE_URL": postgres_dsn,
            "PM_SUPPRESSION_KEY": SUPPRESSION_KEY,
            "PM_TENANT": tenant.name,
            "PM_TOKEN_KEY": MasterKeys.parse(SUPPRESSION_KEY).token_key(tenant.id).encode(),
            "PM_REDIS_URL": redis_url,
            "KUBECONFIG": str(cluster.kubeconfig),
            "PM_METRICS_PORT": "0",
            "PM_POLL_SECONDS": "0.2",
        },
        stderr=log.open("wb"),
    )


async def _campaign(api: ApiServer, token: str, tenant: TenantSetup, name: str) -> dict[str, Any]:
    async with api.client(token) as http:
        found = await http.get(f"/v1/tenants/{tenant.name}/campaigns/{name}")
    assert found.status_code == 200, found.text
    body: dict[str, Any] = found.json()
    return body


async def _no_sideways_scrolling(page: Page, route: str) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{route} scrolls sideways at 360 px by {overflow}px"


async def test_create_start_watch_complete_pause_and_resume(
    dashboard_api: ApiServer,
    browser: Browser,
    tenant: TenantSetup,
    db_pool: asyncpg.Pool,
    knot: KnotServer,
    relay: SinkServer,
    core: client.CoreV1Api,
    cluster: Cluster,
    postgres_dsn: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    phases = Phases()
    email = await make_user(db_pool, tenant, Role.OWNER)
    owner = (await sign_in(dashboard_api, email))["accessToken"]
    core.create_namespaced_secret(
        tenant.namespace,
        {
            "metadata": {"name": "tsig"},
            "data": {"secret": base64.b64encode(knot.tsig.secret.encode()).decode()},
        },
    )
    await _set_up(dashboard_api, owner, tenant, knot, relay)
    axe: dict[str, list[dict[str, Any]]] = {}
    phases.done("setup")

    page = await new_page(browser, dashboard_api.url)
    await sign_in_page(page, email)
    await goto(page, "campaigns")
    await expect(page.get_by_text("No campaign yet")).to_be_visible()
    await check_page(page, "campaigns-none", axe)

    # The form, by the keyboard from the list: the page's link to it.
    await page.get_by_role("link", name="New campaign").first.focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1, name="New campaign")).to_be_visible()
    form = page.get_by_role("form", name="New campaign")
    await expect(form.get_by_label("Sending domain")).to_have_value("dash")
    await expect(form.get_by_label("Contact list")).to_have_value("leads")
    merge = form.get_by_role("list", name="Merge fields")
    for field in ("first_name", "email", "unsubscribe_url", "postal_address"):
        await expect(merge).to_contain_text(f"{{{{ {field} }}}}")
    await form.get_by_label("Name", exact=True).fill("Hello Launch!")
    await form.get_by_label("From address (before @").fill("jane")
    await form.get_by_label("From name (optional)").fill("Jane")
    await form.get_by_label("Subject").fill("Hello {{ first_name }}")
    # A field no contact has: the preview names it, under the text body.
    await form.get_by_label("Text body").fill("Hi {{ first_name }} {{ surname }}, a short note.")
    await form.get_by_role("button", name="Preview").click()
    text = form.get_by_label("Text body")
    await expect(text).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#campaign-text-error")).to_contain_text("surname")
    await text.fill("Hi {{ first_name }}, a short note.")
    await form.get_by_role("button", name="Preview").click()
    # The sample is the list's first contact (the API's order), then any other of it.
    sample = form.get_by_label("Preview for", exact=True)
    first = str(await sample.evaluate("s => s.selectedOptions[0].textContent")).strip()
    assert first.startswith("r") and first.endswith("@dest.test"), first
    first_name = first.split("@")[0].upper()
    await expect(page.get_by_test_id("preview-subject")).to_have_text(f"Hello {first_name}")
    preview = page.get_by_test_id("preview-text")
    await expect(preview).to_contain_text(f"Hi {first_name}, a short note.")
    await expect(preview).to_contain_text("1 Penguin Way, Iceberg, AQ")  # the Tenant's footer
    await expect(text).to_have_attribute("aria-invalid", "false")
    other = "r3@dest.test" if first != "r3@dest.test" else "r4@dest.test"
    await sample.select_option(label=other)
    await form.get_by_role("button", name="Preview").click()
    await expect(page.get_by_test_id("preview-subject")).to_have_text(
        f"Hello {other.split('@')[0].upper()}"
    )
    await form.get_by_label("Per mailbox per day").fill("10000")
    await check_page(page, "campaigns-new", axe)
    # A name the API refuses: its message under the field.
    await form.get_by_role("button", name="Create campaign").click()
    name = form.get_by_label("Name", exact=True)
    await expect(name).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#campaign-name-error")).to_contain_text("name")
    await name.fill("hello")
    await form.get_by_role("button", name="Create campaign").click()
    await expect(page.get_by_role("heading", level=1, name="Campaigns")).to_be_visible()
    created = await _campaign(dashboard_api, owner, tenant, "hello")
    spec = created["spec"]
    assert spec["paused"] is True, spec  # created paused: started from the list
    assert spec["from"] == {"address": f"jane@{ZONE}", "name": "Jane"}, spec
    assert spec["audience"]["lists"] == ["leads"] and spec["sendingDomainRef"] == {"name": "dash"}
    assert (
        spec["subject"] == "Hello {{ first_name }}"
        and spec["throttle"]["perMailboxPerDay"] == 10000
    )
    phases.done("form")

    sender_log = tmp_path / "sender.log"
    sender = _sender(tenant, cluster, postgres_dsn, redis_url, sender_log)
    try:
        card = page.get_by_role("listitem", name="Campaign hello")
        await expect(card).to_contain_text("Paused")
        await card.get_by_role("button", name="Resume hello").click()
        await expect(card.get_by_role("button", name="Pause hello")).to_be_visible()
        bar = card.get_by_role("progressbar", name="Progress of hello")
        seen: list[str] = []

        async def progress() -> str:
            value = await bar.get_attribute("aria-valuenow") or "0"
            if not seen or seen[-1] != value:
                seen.append(value)
            return value

        deadline = time.monotonic() + 300
        while await progress() != "100":
            assert time.monotonic() < deadline, (
                f"progress stuck: {seen}\n{sender_log.read_text()[-2000:]}"
            )
            await asyncio.sleep(0.3)
        await expect(card).to_contain_text("Completed", timeout=60_000)
        await expect(card).to_contain_text(f"{CONTACTS} sent of {CONTACTS}")
        print(f"\nprogress seen on the page: {seen}")
        await card.get_by_role("button", name="Show details of hello").click()
        details = card.get_by_role("table", name="Conditions of hello")
        await expect(details).to_contain_text("Ready")
        await check_page(page, "campaigns-completed", axe)
        received = collections.Counter(r for m in relay.messages for r in m.rcpt_tos)
        assert set(received) == {f"r{i}@dest.test" for i in range(CONTACTS)}, received
        assert max(received.values()) == 1, received
        phases.done("sent")

        # A second campaign, sending slowly (one an hour): paused and resumed from the list.
        async with dashboard_api.client(owner) as http:
            made = await http.post(
                f"/v1/tenants/{tenant.name}/campaigns",
                json={
                    "name": "second",
                    "spec": {
                        **{k: spec[k] for k in ("sendingDomainRef", "from", "subject", "text")},
                        "audience": {"lists": ["leads"]},
                        "throttle": {"perHour": 1, "perMailboxPerDay": 10000},
                    },
                },
            )
        assert made.status_code == 201, made.text
        second = page.get_by_role("listitem", name="Campaign second")
        await expect(second).to_contain_text("Sending", timeout=90_000)
        await second.get_by_role("button", name="Pause second").click()
        await expect(second.get_by_role("button", name="Resume second")).to_be_visible()
        assert (await _campaign(dashboard_api, owner, tenant, "second"))["spec"]["paused"] is True
        # Why it is not sending, once the operator has seen the pause.
        await expect(second).to_contain_text("Why it is not sending", timeout=60_000)
        await second.get_by_role("button", name="Show details of second").click()
        await expect(second).to_contain_text("unset spec.paused to resume (Paused)")
        await expect(second.get_by_role("table", name="Conditions of second")).to_contain_text(
            "paused by spec.paused"
        )
        await check_page(page, "campaigns-paused-details", axe)
        await second.get_by_role("button", name="Resume second").click()
        await expect(second.get_by_role("button", name="Pause second")).to_be_visible()
        resumed = await _campaign(dashboard_api, owner, tenant, "second")
        assert resumed["spec"]["paused"] is False, resumed
        # The operator sees the resume: no reason not to send any more.
        await expect(second).not_to_contain_text("Why it is not sending", timeout=60_000)
        phases.done("pause-resume")
    finally:
        sender.terminate()
        sender.wait(30)
    assert sender.returncode == 0, sender_log.read_text()[-3000:]

    # Every campaign page at 360 px: no sideways scrolling, axe-core clean.
    session = await page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    narrow = await new_page(browser, dashboard_api.url, width=360)
    await narrow.goto("/")
    await narrow.evaluate(RESTORE_SESSION, session)
    await narrow.reload()
    for route in NEW_PAGES:
        await goto(narrow, route)
        await narrow.wait_for_load_state("networkidle")
        if route == "campaigns":
            await narrow.get_by_role("button", name="Show details of hello").click()
        else:  # the form as it is used: its choices loaded
            await expect(narrow.get_by_label("Contact list")).to_have_value("leads")
            merge = narrow.get_by_role("list", name="Merge fields")
            await expect(merge).to_contain_text("first_name")
        await check_page(narrow, f"{route.replace('/', '-')}-360px", axe)
        await _no_sideways_scrolling(narrow, route)
    assert all(route in PAGES for route in NEW_PAGES)
    assert axe == {}, json.dumps(axe, indent=2)
    phases.done("narrow-and-accessibility")
