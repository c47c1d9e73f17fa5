"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the real
stack: the API as its own process serving the built dashboard (web/dist), the operator
computing and verifying a sending domain's records against a private Knot server.

A user signs in with the keyboard, adds a sending domain and sees its records (then publishes
them and sees them verified), creates an API key (shown once, and working), revokes it,
pauses and resumes a campaign. Every page is screenshotted (build/test-artifacts/dashboard/),
checked by axe-core for serious or critical violations, and at 360 px wide for horizontal
overflow. Each phase's time is printed."""

from __future__ import annotations

import gzip
import json
import re
import time
from typing import Any
from urllib.parse import urlparse

import asyncpg
import dns.query
import dns.update
import httpx
import pytest
import pytest_asyncio
from kubernetes import client
from playwright.async_api import Browser, expect

from penguinmails.common.db.accounts import Role
from penguinmails.devstack.knot import KnotServer
from penguinmails.operator.dns.records import txt_rdata_text
from tests.integration.api_stack import (
    PASSWORD,
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    make_tenant,
    make_user,
    sign_in,
)
from tests.integration.dashboard_support import (
    DIST,
    PAGES,
    RESTORE_SESSION,
    ZONE,
    Phases,
    browser,
    check_page,
    dashboard_api,
    goto,
    knot,
    new_page,
    operator,
)
from tests.integration.test_api_resources import campaign_spec

pytestmark = pytest.mark.integration

__all__ = [  # fixtures used by name
    "api_database_url",
    "api_kubeconfig",
    "browser",
    "dashboard_api",
    "knot",
    "operator",
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(
    dashboard_api: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> TenantSetup:
    return await make_tenant(db_pool, core, "dash")


async def test_a_user_works_through_every_page(
    dashboard_api: ApiServer,
    browser: Browser,
    tenant: TenantSetup,
    db_pool: asyncpg.Pool,
    knot: KnotServer,
) -> None:
    phases = Phases()
    email = await make_user(db_pool, tenant, Role.OWNER)
    owner = (await sign_in(dashboard_api, email))["accessToken"]
    base = f"/v1/tenants/{tenant.name}"
    axe: dict[str, list[dict[str, Any]]] = {}
    page = await new_page(browser, dashboard_api.url)
    phases.done("setup")

    # Sign in with the keyboard only; a wrong password first: the error is announced.
    await page.goto("/")
    await expect(page.get_by_role("heading", name="Sign in to PenguinMails")).to_be_visible()
    await check_page(page, "sign-in", axe)
    await page.get_by_label("E-mail address").focus()
    await page.keyboard.type(email)
    await page.keyboard.press("Tab")
    await page.keyboard.type("not the password")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail address or password")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
    # Empty states say what to do next.
    await expect(page.get_by_text("No sending domain yet: add one")).to_be_visible()
    await check_page(page, "overview-empty", axe)
    phases.done("sign-in")

    # A sending domain: a bad name is refused naming the field, then the domain is added and
    # its records appear (computed by the operator), then verify once published.
    await goto(page, "domains")
    await expect(page.get_by_text("No sending domain yet")).to_be_visible()
    field = page.get_by_label("Domain to send from")
    await field.fill("not a domain!")
    await page.get_by_role("button", name="Add domain").click()
    await expect(field).to_have_attribute("aria-invalid", "true")
    error_text = await page.locator("#new-domain-error").inner_text()
    assert error_text, "the domain field's error is shown under it"
    await field.fill(ZONE)
    await page.get_by_role("button", name="Add domain").click()
    table = page.get_by_role("table", name=f"DNS records of {ZONE}")
    await expect(table).to_be_visible(timeout=90_000)
    async with dashboard_api.client(owner) as http:
        shown = (await http.get(f"{base}/sending-domains/{ZONE}")).json()
    records = shown["status"]["records"]
    assert records, shown
    for record in records:  # every record the API lists is on the page with its value
        await expect(table).to_contain_text(record["value"][:40])
    copy_values = table.get_by_role("button", name=re.compile("^Copy value of"))
    assert await copy_values.count() == len(records)
    first = records[0]
    copy_first = table.get_by_role("button", name=re.compile("value of")).first
    await copy_first.click()
    await expect(copy_first).to_contain_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == first["value"]
    await check_page(page, "domains-records", axe)
    phases.done("domain-records")

    publish(knot, records)
    await expect(page.get_by_text("Verified", exact=True).first).to_be_visible(timeout=90_000)
    await expect(table.get_by_text("Not seen yet")).to_have_count(0, timeout=90_000)
    phases.done("domain-verified")

    # An API key: created, shown once (and it works), gone after a reload, then revoked.
    await goto(page, "api-keys")
    await expect(page.get_by_text("No API key yet")).to_be_visible()
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#key-name-error")).to_be_visible()  # the API named the field
    await page.get_by_label("Key name").fill("crm sync")
    await page.get_by_role("button", name="Create key").click()
    key = (await page.get_by_test_id("new-key").inner_text()).strip()
    assert key.startswith("pm_live_"), key
    async with httpx.AsyncClient(base_url=dashboard_api.url) as http:
        listed = await http.get(
            f"{base}/sending-domains", headers={"Authorization": f"Bearer {key}"}
        )
    assert listed.status_code == 200, listed.text
    await check_page(page, "api-keys-created", axe)
    await page.reload()
    await expect(page.get_by_role("cell", name="crm sync", exact=True)).to_be_visible()
    assert key not in await page.content(), "the key is shown once only"
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Revoke crm sync").click()
    await expect(page.get_by_text("Revoked", exact=True)).to_be_visible()
    async with httpx.AsyncClient(base_url=dashboard_api.url) as http:
        refused = await http.get(
            f"{base}/sending-domains", headers={"Authorization": f"Bearer {key}"}
        )
    assert refused.status_code == 401, refused.text
    phases.done("api-key")

    # A campaign (created through the API: this slice has no create flow) paused and resumed.
    await goto(page, "campaigns")
    await expect(page.get_by_text("No campaign yet")).to_be_visible()
    await check_page(page, "campaigns-empty", axe)
    async with dashboard_api.client(owner) as http:
        made = await http.post(
            f"{base}/campaigns",
            json={"name": "launch", "spec": campaign_spec(ZONE, ZONE, "Hello from the dashboard")},
        )
    assert made.status_code == 201, made.text
    await goto(page, "campaigns")
    card = page.get_by_role("listitem", name="Campaign launch")
    await expect(card).to_contain_text("Hello from the dashboard")
    await card.get_by_role("button", name="Pause launch").click()
    await expect(card.get_by_role("button", name="Resume launch")).to_be_visible()
    await expect(card.get_by_text("Paused", exact=True)).to_be_visible()
    assert (await campaign(dashboard_api, owner, base))["spec"]["paused"] is True
    await check_page(page, "campaigns-paused", axe)
    await card.get_by_role("button", name="Resume launch").click()
    await expect(card.get_by_role("button", name="Pause launch")).to_be_visible()
    assert (await campaign(dashboard_api, owner, base))["spec"].get("paused") is False
    phases.done("campaign")

    # The overview now shows the domain's health; every page at 360 px: no sideways scrolling.
    await goto(page, "overview")
    await expect(page.get_by_role("region", name="Sending domains")).to_contain_text(ZONE)
    await check_page(page, "overview", axe)
    session = await page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    narrow = await new_page(browser, dashboard_api.url, width=360)
    await narrow.goto("/")
    await narrow.evaluate(RESTORE_SESSION, session)
    await narrow.reload()  # the tab's sign-in, as after a refresh
    for route in PAGES:
        await goto(narrow, route)
        await narrow.wait_for_load_state("networkidle")
        await check_page(narrow, f"{route}-360px", axe)
        overflow = await narrow.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{route} scrolls sideways at 360 px by {overflow}px"
    phases.done("narrow-pages")

    await print_figures(browser, dashboard_api.url, session)
    phases.done("figures")

    # Keyboard: the main navigation is reachable and followed with Tab and Enter.
    await page.get_by_role("link", name="Campaigns").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1, name="Campaigns")).to_be_visible()
    assert axe == {}, json.dumps(axe, indent=2)
    phases.done("accessibility")


async def print_figures(browser: Browser, url: str, session: str) -> None:
    """The overview's initial load on loopback (signed in, empty cache) and the gzipped size
    of the JavaScript it loads: figures, not assertions (the machine is shared)."""
    page = await new_page(browser, url)
    await page.goto("/favicon.ico")  # the origin, to hold the session before the real load
    await page.evaluate(RESTORE_SESSION, session)
    scripts: list[str] = []
    page.on("response", lambda r: scripts.append(r.url) if r.url.endswith(".js") else None)
    started = time.monotonic()
    await page.goto("/#/overview")
    await expect(page.get_by_role("region", name="Sending domains")).to_contain_text(ZONE)
    loaded = time.monotonic() - started
    # Of which the page itself (HTML, JS, CSS parsed and run), before the API's answers.
    ready = await page.evaluate(
        "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
    )
    gzipped = sum(
        len(gzip.compress((DIST / urlparse(u).path.lstrip("/")).read_bytes(), 9)) for u in scripts
    )
    print(
        f"dashboard figures: overview loaded in {loaded * 1000:.0f} ms on loopback "
        f"(the page itself ready at {ready:.0f} ms, then the API's answers); "
        f"{len(scripts)} scripts, {gzipped / 1024:.1f} KiB of JavaScript gzipped"
    )
    await page.context.close()


def publish(knot: KnotServer, records: list[dict[str, Any]]) -> None:
    """Publish what the page lists, as the customer would at their DNS host."""
    update = dns.update.UpdateMessage(
        ZONE + ".", keyring=knot.tsig.keyring(), keyname=knot.tsig.key_name
    )
    for record in records:
        value = record["value"]
        if record["type"] == "TXT":
            value = txt_rdata_text(value)
        elif record["type"] in ("MX", "CNAME") and not value.endswith("."):
            value += "."
        update.add(record["name"] + ".", 60, record["type"], value)
    response = dns.query.tcp(update, knot.address, port=knot.port, timeout=3)
    assert response.rcode() == 0, response


async def campaign(api: ApiServer, token: str, base: str) -> dict[str, Any]:
    async with api.client(token) as http:
        found = await http.get(f"{base}/campaigns/launch")
    assert found.status_code == 200, found.text
    body: dict[str, Any] = found.json()
    return body
