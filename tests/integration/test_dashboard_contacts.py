"""The dashboard's contacts, SMTP servers and audit-log pages in a real browser (Debian's
Chromium driven by Playwright) against the real stack: the API as its own process serving the
built dashboard, the operator probing a relay (a real SMTP listener) and resolving its reverse
DNS and a blocklist through a private Knot server.

A user uploads a CSV with bad lines and watches the import's progress bar, held mid-way by an
uncommitted row the import must wait for (no timing involved), then reach completion with
each bad line named by line and field; creates a list; adds, searches and removes a
suppression; adds a relay (a bad hostname first: the error is under the field) and sees the
operator's probe results (banner, reverse DNS, the blocklist that lists it) and the mailboxes'
warm-up; and finds their own actions in the audit log, filtered and page by page. Every page
is screenshotted, checked by axe-core and at 360 px wide."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from kubernetes import client
from playwright.async_api import Browser, Page, expect

from penguinmails.common.db.accounts import Role
from penguinmails.devstack.dnszones import minimal_zone
from penguinmails.devstack.knot import KnotServer
from penguinmails.devstack.sink import SinkServer
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    make_tenant,
    make_user,
    sign_in,
)
from tests.integration.conftest import OperatorFactory, OperatorProcess
from tests.integration.dashboard_support import (
    PAGES,
    RESTORE_SESSION,
    ZONE,
    Phases,
    browser,
    check_page,
    dashboard_api,
    goto,
    new_page,
    sign_in_page,
)
from tests.integration.test_api_contacts import holding_address

pytestmark = pytest.mark.integration

__all__ = [  # fixtures used by name
    "api_database_url",
    "api_kubeconfig",
    "browser",
    "dashboard_api",
]

NEW_PAGES = ("contacts", "servers", "audit-log")
RELAY_HOST = f"relay.{ZONE}"
BLOCKLIST = "zen.bl.test"
ROWS = 3_000
BLOCKER_LINE = 1_502
"""In the import's second chunk of 1,000 rows: the first chunk's progress is reported while the
second waits for the test's uncommitted row."""


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """The dashboard's zone with the relay's name, its reverse zone, and a blocklist that lists
    the relay's address (127.0.0.1)."""
    zones = {
        ZONE: minimal_zone(ZONE, extra="relay IN A 127.0.0.1\n"),
        "0.0.127.in-addr.arpa": minimal_zone(
            "0.0.127.in-addr.arpa",
            nameservers=(f"ns1.{ZONE}.",),
            extra=f"1 IN PTR {RELAY_HOST}.\n",
        ),
        BLOCKLIST: minimal_zone(
            BLOCKLIST, extra='1.0.0.127 IN A 127.0.0.2\n1.0.0.127 IN TXT "listed for testing"\n'
        ),
    }
    with KnotServer(tmp_path_factory.mktemp("knot"), zones) as server:
        yield server


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, knot: KnotServer) -> Iterator[OperatorProcess]:
    """The operator resolving through the private Knot: domain records, the relay's reverse
    DNS and the one blocklist configured (probes at their default interval: the first runs
    when the server is created)."""
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS="2",
        PM_SMTP_PROBE_TIMEOUT_SECONDS="5",
        PM_DNSBL_ZONES=BLOCKLIST,
        PM_DOMAIN_BLOCKLISTS="",
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()


@pytest.fixture(scope="module")
def relay() -> Iterator[SinkServer]:
    with SinkServer(hostname=RELAY_HOST) as sink:
        yield sink


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(
    dashboard_api: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> TenantSetup:
    return await make_tenant(db_pool, core, "dash-contacts")


@dataclass(frozen=True)
class Csv:
    body: bytes
    good: int
    bad: dict[int, str]
    """Line number -> the field its error must name ("whole line" for the row itself)."""
    blocker: str


def contacts_csv(tag: str) -> Csv:
    """ROWS data rows (lines 2 to ROWS + 1), four of them bad in three ways."""
    lines = ["email,first_name"]
    bad: dict[int, str] = {}
    blocker = ""
    for n in range(ROWS):
        line = n + 2
        address = f"c{n}-{tag}@example.com"
        if line in (7, 2_400):
            lines.append(f"not-an-address-{n},Bad")
            bad[line] = "email"
        elif line == 40:
            lines.append(f"{address},Too,Many")  # three columns of two
            bad[line] = "whole line"
        elif line == 2_950:
            lines.append(f"c0-{tag}@EXAMPLE.com,Again")  # line 2's address again
            bad[line] = "email"
        else:
            lines.append(f"{address},Name{n}")
            if line == BLOCKER_LINE:
                blocker = address
    return Csv(("\n".join(lines) + "\n").encode(), ROWS - len(bad), bad, blocker)


async def test_contacts_servers_and_audit_log(
    dashboard_api: ApiServer,
    browser: Browser,
    tenant: TenantSetup,
    db_pool: asyncpg.Pool,
    relay: SinkServer,
    tmp_path: Path,
) -> None:
    phases = Phases()
    email = await make_user(db_pool, tenant, Role.OWNER)
    token = (await sign_in(dashboard_api, email))["accessToken"]
    base = f"/v1/tenants/{tenant.name}"
    axe: dict[str, list[dict[str, Any]]] = {}
    page = await new_page(browser, dashboard_api.url)
    await sign_in_page(page, email)
    phases.done("sign-in")

    # Contacts: empty states say what to do; a list is created (its name is taken the second
    # time: the error is under the field).
    await goto(page, "contacts")
    await expect(page.get_by_text("No contact list yet")).to_be_visible()
    await expect(page.get_by_text("Nobody is suppressed yet")).to_be_visible()
    await check_page(page, "contacts-empty", axe)
    await page.get_by_label("New list").fill("leads")
    await page.get_by_role("button", name="Create list").click()
    lists = page.get_by_role("table", name="Contact lists")
    await expect(lists.get_by_role("row", name=re.compile("^leads 0"))).to_be_visible()
    await page.get_by_label("New list").fill("leads")
    await page.get_by_role("button", name="Create list").click()
    await expect(page.locator("#list-name-error")).to_contain_text("leads")
    phases.done("lists")

    # The upload, held mid-way by an uncommitted contact of the second chunk's address.
    csv = contacts_csv(secrets.token_hex(3))
    upload = tmp_path / "contacts.csv"
    upload.write_bytes(csv.body)
    async with dashboard_api.client(token) as http:
        listed = (await http.get(f"{base}/contact-lists")).json()["data"]
    list_id = next(x["id"] for x in listed if x["name"] == "leads")
    await page.get_by_role("button", name="Upload and import").click()
    await expect(page.locator("#import-file-error")).to_contain_text("Choose the CSV file")
    await page.get_by_label("Into the list").fill("leads")
    await page.get_by_label("CSV file").set_input_files(str(upload))
    bar = page.get_by_role("progressbar", name="Import progress")
    async with holding_address(db_pool, tenant.id, list_id, csv.blocker):
        await page.get_by_role("button", name="Upload and import").click()
        await expect(bar).to_be_visible()
        await page.wait_for_function(
            "Number(document.querySelector('[aria-label=\"Import progress\"]')"
            ".getAttribute('aria-valuenow')) > 0"
        )
        midway = int(await bar.get_attribute("aria-valuenow") or "0")
        summary = await page.get_by_test_id("import-summary").inner_text()
        # The import panel's state (the recent imports below list the same job).
        panel = page.get_by_role("group", name="Import", exact=True)
        await expect(panel.get_by_text("Importing", exact=True)).to_be_visible()
        await check_page(page, "contacts-importing", axe)
    # What was read before the held row, and no more: its chunk is not reported yet.
    rows_read = int(re.sub(r"\D", "", summary.split(" rows read")[0]))
    assert 0 < rows_read < BLOCKER_LINE - 1, summary
    assert 0 < midway < 100, midway
    await expect(bar).to_have_attribute("aria-valuenow", "100", timeout=90_000)
    await expect(panel.get_by_text("Imported", exact=True)).to_be_visible()
    await expect(page.get_by_test_id("import-summary")).to_have_text(
        f"{csv.good:,} contacts imported, {len(csv.bad)} lines skipped."
    )
    skipped = page.get_by_role("table", name="Lines skipped by the import")
    for line, field in csv.bad.items():
        row = skipped.get_by_role("row", name=re.compile(f"^{line} {re.escape(field)} "))
        await expect(row).to_be_visible()
    await expect(skipped.get_by_role("row")).to_have_count(len(csv.bad) + 1)  # and the header
    await expect(skipped).to_contain_text("duplicate of line 2")
    await expect(lists.get_by_role("row", name=re.compile(f"^leads {csv.good:,} "))).to_be_visible()
    async with dashboard_api.client(token) as http:
        listed = (await http.get(f"{base}/contact-lists")).json()["data"]
    assert [(x["name"], x["contacts"]) for x in listed] == [("leads", csv.good)], listed
    # The list's contacts, as the API pages them; one removed from the list.
    await lists.get_by_role("button", name="Show contacts of leads").click()
    members = page.get_by_role("table", name="Contacts of leads, oldest first")
    await expect(members.get_by_role("row")).to_have_count(50 + 1)
    async with dashboard_api.client(token) as http:
        first = (await http.get(f"{base}/contacts", params={"list": "leads", "limit": "50"})).json()
    emails = [await c.inner_text() for c in await members.locator("tbody tr td:first-child").all()]
    assert emails == [c["email"] for c in first["data"]], emails[:3]
    assert first["hasMore"] is True
    await expect(page.get_by_role("button", name="Show more contacts")).to_be_visible()
    gone = first["data"][0]
    page.once("dialog", lambda dialog: dialog.accept())
    await members.get_by_role("button", name=f"Remove {gone['email']}").click()
    left = f"{csv.good - 1:,}"
    await expect(lists.get_by_role("row", name=re.compile(f"^leads {left} "))).to_be_visible()
    await expect(members.get_by_text(gone["email"], exact=True)).to_have_count(0)
    async with dashboard_api.client(token) as http:
        assert (await http.get(f"{base}/contacts/{gone['id']}")).status_code == 404
    await check_page(page, "contacts-imported", axe)
    print(f"import progress seen mid-way: {midway}% ({summary})")
    phases.done("import")

    # Suppression: a malformed address is refused under the field; one added, searched,
    # removed; another searched with the keyboard and found not suppressed.
    address = page.get_by_label("E-mail address")
    await address.fill("not-an-address")
    await page.get_by_role("button", name="Add to the list").click()
    await expect(address).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#suppression-email-error")).to_contain_text("not an e-mail address")
    await address.fill("Blocked@Example.com")
    await page.get_by_label("Reason").select_option("complaint")
    await page.get_by_role("button", name="Add to the list").click()
    await expect(page.get_by_role("status")).to_contain_text("is now suppressed (complaint)")
    entries = page.get_by_role("table", name="Suppression entries, oldest first")
    await expect(entries.get_by_role("row")).to_have_count(2)
    await address.fill("someone-else@example.com")
    await address.press("Enter")
    result = page.get_by_test_id("suppression-result")
    await expect(result).to_contain_text("Not suppressed")
    await address.fill("blocked@example.com")
    await address.press("Enter")
    await expect(result).to_contain_text("Suppressed")
    await expect(result).to_contain_text("complaint")
    await check_page(page, "contacts-suppression", axe)
    await result.get_by_role("button", name="Remove blocked@example.com").click()
    await expect(result).to_contain_text("Not suppressed")
    await expect(page.get_by_text("Nobody is suppressed yet")).to_be_visible()
    async with dashboard_api.client(token) as http:
        checked = await http.post(
            f"{base}/suppressions/check", json={"email": "blocked@example.com"}
        )
    assert checked.json()["suppressed"] is False, checked.text
    # Many at once: all or nothing, the bad address named by its line (blank lines skipped).
    bulk = page.locator("details", has_text="Add many addresses at once")
    await page.get_by_text("Add many addresses at once").click()
    many = page.get_by_label("Addresses, one a line")
    await many.fill("a@example.com\n\nnot-an-address\nb@example.com")
    await page.get_by_role("button", name="Add these addresses").click()
    await expect(page.locator("#bulk-emails-error")).to_contain_text("Line 3:")
    await expect(page.get_by_text("Nobody is suppressed yet")).to_be_visible()  # none added
    await many.fill("a@example.com\nb@example.com")
    await page.get_by_role("button", name="Add these addresses").click()
    await expect(bulk.get_by_role("status")).to_contain_text("2 added, 0 already on the list")
    await expect(entries.get_by_role("row")).to_have_count(2 + 1)
    phases.done("suppression")

    # Servers: a relay added (a bad hostname first), then the operator's probe results.
    async with dashboard_api.client(token) as http:
        made = await http.post(
            f"{base}/sending-domains",
            json={
                "name": ZONE,
                "spec": {
                    "domain": ZONE,
                    "dnsProvider": {"type": "manual"},
                    "mailboxes": [
                        {
                            "localPart": "ann",
                            "dailyLimit": 200,
                            "warmup": {"initialPerDay": 20, "dailyIncreasePercent": 50},
                        },
                        {"localPart": "bob", "dailyLimit": 80},
                    ],
                },
            },
        )
    assert made.status_code == 201, made.text
    await goto(page, "servers")
    await expect(page.get_by_text("No SMTP server yet")).to_be_visible()
    await check_page(page, "servers-empty", axe)
    await page.get_by_label("Name", exact=True).fill("relay")
    await page.get_by_label("Hostname").fill("not a host!")
    await page.get_by_label("Relay host").fill("127.0.0.1")
    await page.get_by_label("Port").fill(str(relay.port))
    await page.get_by_label("TLS").select_option("none")
    await page.get_by_role("button", name="Add server").click()
    hostname = page.get_by_label("Hostname")
    await expect(hostname).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#server-hostname-error")).to_contain_text("spec.hostname")
    await hostname.fill(RELAY_HOST)
    await page.get_by_role("button", name="Add server").click()
    card = page.get_by_role("listitem", name="Server relay")
    banner = card.get_by_test_id("probe-banner")
    await expect(banner).to_contain_text("220", timeout=90_000)
    async with dashboard_api.client(token) as http:
        server = (await http.get(f"{base}/smtp-servers/relay")).json()
    probe = server["status"]["lastProbe"]
    assert probe["listedOn"] == [BLOCKLIST] and probe["forwardConfirmedRdns"] is True, probe
    await expect(banner).to_have_text(probe["banner"])
    await expect(card.get_by_test_id("probe-blocklists")).to_have_text(f"Listed on {BLOCKLIST}")
    await expect(card.get_by_text("Needs attention")).to_be_visible()  # listed: not Ready
    await expect(page.get_by_test_id("servers-summary")).to_have_text(
        "1 server:0 healthy1 need attention"
    )
    checks = card.get_by_role("table", name="Checks of relay")
    await expect(checks.get_by_role("row", name=re.compile("^Blocklists Failing"))).to_contain_text(
        BLOCKLIST
    )
    await expect(checks.get_by_role("row", name=re.compile("^SMTP answers OK"))).to_be_visible()
    await expect(checks.get_by_role("row", name=re.compile("^Reverse DNS OK"))).to_be_visible()
    chart = card.get_by_role("img", name=re.compile("Planned warm-up of relay"))
    await expect(chart).to_be_visible()
    # The mailboxes' warm-up as the operator computed it today: ann ramps from 20, bob has none.
    mailboxes = page.get_by_role("table", name=f"Mailboxes of {ZONE} today")
    ann = mailboxes.get_by_role("row", name=re.compile(f"^ann@{ZONE} day 1 20 200"))
    await expect(ann).to_be_visible(timeout=90_000)
    bob = mailboxes.get_by_role("row", name=re.compile(f"^bob@{ZONE} no warm-up 80 80"))
    await expect(bob).to_be_visible()
    await check_page(page, "servers", axe)
    phases.done("servers")

    # The audit log: this user's writes, newest first; filtered; page by page.
    async with dashboard_api.client(token) as http:
        for n in range(50):  # enough entries for a second page
            added = await http.post(f"{base}/suppressions", json={"email": f"s{n}@example.com"})
            assert added.status_code == 200, added.text
        logged = await all_entries(http, f"{base}/audit-log")
        me = f"user:{(await http.get('/v1/me')).json()['id']}"
    actions = [e["action"] for e in logged]
    wanted = {"contact_list.create", "contact_import.create", "suppression.add",
              "suppression.remove", "sending_domain.create", "smtp_server.create"}  # fmt: skip
    assert wanted <= set(actions), actions
    assert {e["actor"] for e in logged} == {me}, logged
    await goto(page, "audit-log")
    table = page.get_by_role("table", name="Audit log entries, newest first")
    rows = table.get_by_role("row")
    await expect(rows).to_have_count(50 + 1)  # the first page, and the header
    await page.get_by_role("button", name="Show more entries").click()
    await expect(rows).to_have_count(len(logged) + 1)
    await expect(page.get_by_role("button", name="Show more entries")).to_have_count(0)
    shown = [await r.inner_text() for r in await table.get_by_role("row").all()]
    assert [line.split("\t")[2] for line in shown[1:]] == actions, shown[:4]
    assert all(line.split("\t")[1] == "you" for line in shown[1:]), shown[:4]
    await check_page(page, "audit-log", axe)
    await page.get_by_label("Action", exact=True).fill("suppression.remove")
    await page.get_by_label("Only my actions").check()
    await page.get_by_role("button", name="Apply filters").click()
    removal = [e for e in logged if e["action"] == "suppression.remove"]
    await expect(rows).to_have_count(len(removal) + 1)
    await expect(table).to_contain_text(removal[0]["target"])
    await page.get_by_label("From").fill("2000-01-01T00:00")
    await page.get_by_label("Before").fill("2000-01-02T00:00")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.get_by_text("No entry matches these filters")).to_be_visible()
    await check_page(page, "audit-log-filtered", axe)
    phases.done("audit-log")

    # Every new page at 360 px: no sideways scrolling; and reached with the keyboard.
    session = await page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    narrow = await new_page(browser, dashboard_api.url, width=360)
    await narrow.goto("/")
    await narrow.evaluate(RESTORE_SESSION, session)
    await narrow.reload()
    for route in NEW_PAGES:
        await goto(narrow, route)
        await narrow.wait_for_load_state("networkidle")
        await check_page(narrow, f"{route}-360px", axe)
        await assert_no_overflow(narrow, route)
    await narrow.context.close()
    await page.get_by_role("link", name="Contacts").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1, name=PAGES["contacts"])).to_be_visible()
    # Back on the page, the newest import (the API lists them) is shown again, finished.
    await expect(page.get_by_test_id("import-summary")).to_have_text(
        f"{csv.good:,} contacts imported, {len(csv.bad)} lines skipped."
    )
    assert axe == {}, json.dumps(axe, indent=2)
    phases.done("narrow-and-accessibility")


async def all_entries(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        response = await http.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["data"]
        if not body["hasMore"]:
            return items
        cursor = body["nextCursor"]


async def assert_no_overflow(page: Page, route: str) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{route} scrolls sideways at 360 px by {overflow}px"
