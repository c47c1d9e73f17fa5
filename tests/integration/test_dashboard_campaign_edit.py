"""The campaign form's mailboxes and the campaign edit page in a real browser (Debian's Chromium
driven by Playwright) against the real stack: the API as its own process serving the built
dashboard, the operator (every controller) publishing and verifying two sending domains in a
private Knot server.

A user creates a campaign sending from two mailboxes on two domains (a stop rule the API refuses
first: its message under the field) and the API holds them as spec.rotation; edits its throttles,
stop rules and mailboxes (a bad value first, under its field) and the API holds the change; then
edits a copy someone else changed meanwhile: the API refuses it (412, If-Match), the page says
so and shows the campaign as it now is, and saving again works. Every page is screenshotted,
checked by axe-core, and the edit page at 360 px wide without sideways scrolling."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import asyncpg
import pytest
from kubernetes import client
from playwright.async_api import Browser, Page, expect

from penguinmails.common.db.accounts import Role
from penguinmails.devstack.knot import KnotServer
from penguinmails.devstack.sink import SinkServer
from tests.integration.api_stack import ApiServer, TenantSetup, make_user, sign_in
from tests.integration.dashboard_support import (
    RESTORE_SESSION,
    ZONE,
    Phases,
    check_page,
    goto,
    new_page,
    sign_in_page,
)
from tests.integration.test_dashboard_campaign import (
    _campaign,
    _no_sideways_scrolling,
    api_database_url,
    api_kubeconfig,
    browser,
    dashboard_api,
    knot,
    operator,
    relay,
    tenant,
    tenants,
)

pytestmark = pytest.mark.integration

__all__ = [  # fixtures used by name
    "api_database_url",
    "api_kubeconfig",
    "browser",
    "dashboard_api",
    "knot",
    "operator",
    "relay",
    "tenant",
    "tenants",
]

SECOND = f"b.{ZONE}"
# The mailboxes of the two domains: (SendingDomain, its domain, its spec.mailboxes).
DOMAINS: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "dash",
        ZONE,
        [
            {"localPart": "jane", "displayName": "Jane", "dailyLimit": 200},
            {"localPart": "joe", "dailyLimit": 80},
        ],
    ),
    (
        "dash2",
        SECOND,
        [
            {
                "localPart": "kim",
                "dailyLimit": 300,
                "warmup": {"enabled": True, "initialPerDay": 20, "dailyIncreasePercent": 25},
            }
        ],
    ),
]


async def _set_up(
    api: ApiServer, token: str, tenant: TenantSetup, knot: KnotServer, relay: SinkServer
) -> None:
    """Through the API: a few contacts, the relay, and two domains with mailboxes (published
    by RFC 2136 into Knot), until both domains' records are verified and the operator has
    computed their mailboxes' limits today (status.mailboxes)."""
    base = f"/v1/tenants/{tenant.name}"
    async with api.client(token) as http:
        started = await http.post(
            f"{base}/contact-imports",
            params={"list": "leads"},
            content=b"email,first_name\na@dest.test,A\nb@dest.test,B\n",
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
        for name, domain, mailboxes in DOMAINS:
            made = await http.post(
                f"{base}/sending-domains",
                json={
                    "name": name,
                    "spec": {
                        "domain": domain,
                        "zone": ZONE,
                        "dnsProvider": knot.rfc2136_provider(),
                        "smtpServerRefs": [{"name": "relay"}],
                        "mailboxes": mailboxes,
                        "mx": {"enabled": False},
                        "dmarc": {"policy": "none"},
                        "verifyInterval": "2s",
                    },
                },
            )
            assert made.status_code == 201, made.text
        deadline = time.monotonic() + 180
        for name, _, _ in DOMAINS:
            while True:
                status = (await http.get(f"{base}/sending-domains/{name}")).json().get("status", {})
                found = status.get("records") or []
                if found and all(r["verified"] for r in found) and status.get("mailboxes"):
                    break
                assert time.monotonic() < deadline, f"{name}'s records never verified: {status}"
                await asyncio.sleep(1)


async def _mailbox_status(
    api: ApiServer, token: str, tenant: TenantSetup, domain: str
) -> list[dict[str, Any]]:
    async with api.client(token) as http:
        found = await http.get(f"/v1/tenants/{tenant.name}/sending-domains/{domain}")
    assert found.status_code == 200, found.text
    mailboxes: list[dict[str, Any]] = (found.json().get("status") or {}).get("mailboxes") or []
    return mailboxes


async def _invalid(page: Page, label: str, field_id: str, says: str) -> None:
    """The field is marked invalid, with the API's message under it."""
    await expect(page.get_by_label(label, exact=True)).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(f"#{field_id}-error")).to_contain_text(says)


async def test_mailboxes_edit_and_a_stale_edit(
    dashboard_api: ApiServer,
    browser: Browser,
    tenant: TenantSetup,
    db_pool: asyncpg.Pool,
    knot: KnotServer,
    relay: SinkServer,
    core: client.CoreV1Api,
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
    await goto(page, "campaigns/new")
    form = page.get_by_role("form", name="New campaign")
    await form.get_by_label("Name", exact=True).fill("rotate")
    await form.get_by_label("Several mailboxes, across domains").check()
    picker = form.get_by_role("group", name="Mailboxes to send from")
    # Every domain's mailboxes, each domain with its verification.
    for _, domain, mailboxes in DOMAINS:
        box = picker.get_by_role("group", name=re.compile(f"^{re.escape(domain)} "))
        await expect(box).to_contain_text("Verified")
        for m in mailboxes:
            await expect(box.get_by_label(f"{m['localPart']}@{domain}")).not_to_be_checked()
    # kim's limit today and warm-up day, as the operator computed them.
    kim = await _mailbox_status(dashboard_api, owner, tenant, "dash2")
    shown = f"{kim[0]['dailyLimit']} a day today of 300, warm-up day {kim[0]['warmupDay']}"
    await expect(
        picker.get_by_role("group", name=re.compile(f"^{re.escape(SECOND)} "))
    ).to_contain_text(shown)
    print(f"kim's status: {kim}")
    # None ticked: said under the mailboxes (no request).
    await form.get_by_role("button", name="Create campaign").click()
    await expect(page.locator("#campaign-mailboxes-error")).to_contain_text(
        "Tick at least one mailbox"
    )
    await picker.get_by_label(f"jane@{ZONE}").check()
    await picker.get_by_label(f"kim@{SECOND}").check()
    await picker.get_by_label("Keep each contact on the mailbox").uncheck()
    await form.get_by_label("Subject").fill("Hello {{ first_name }}")
    await form.get_by_label("Text body").fill("Hi {{ first_name }}.")
    await form.get_by_label("Per mailbox per day").fill("40")
    # A rate over 100 %: the API's message under the field.
    await form.get_by_label("Stop above bounce rate (%)").fill("150")
    await form.get_by_label("Stop above complaint rate (%)").fill("0.2")
    await form.get_by_role("button", name="Create campaign").click()
    await _invalid(page, "Stop above bounce rate (%)", "campaign-max-bounce", "maxBounceRate")
    # Under that field only, not its neighbours of the same section.
    await expect(page.locator("#campaign-min-sample-error")).to_have_count(0)
    await check_page(page, "campaign-new-mailboxes", axe)
    await form.get_by_label("Stop above bounce rate (%)").fill("3")
    await form.get_by_role("button", name="Create campaign").click()
    await expect(page.get_by_role("heading", level=1, name="Campaigns")).to_be_visible()
    spec = (await _campaign(dashboard_api, owner, tenant, "rotate"))["spec"]
    assert spec["rotation"] == {
        "mailboxes": [
            {"sendingDomainRef": {"name": "dash"}, "localParts": ["jane"]},
            {"sendingDomainRef": {"name": "dash2"}, "localParts": ["kim"]},
        ],
        "sticky": False,
    }, spec
    # The first mailbox is the campaign's domain and default From (its display name).
    assert spec["sendingDomainRef"] == {"name": "dash"}, spec
    assert spec["from"] == {"address": f"jane@{ZONE}", "name": "Jane"}, spec
    assert spec["smtpServerRefs"] == [] and spec["paused"] is True, spec
    assert spec["stopRules"]["maxBounceRate"] == 0.03, spec
    assert spec["stopRules"]["maxComplaintRate"] == 0.002, spec
    assert spec["throttle"]["perMailboxPerDay"] == 40, spec
    phases.done("create")

    # Edit it from the list: the form holds what the API holds.
    card = page.get_by_role("listitem", name="Campaign rotate")
    await card.get_by_role("link", name="Edit rotate").click()
    await expect(page.get_by_role("heading", level=1, name="Edit campaign rotate")).to_be_visible()
    edit = page.get_by_role("form", name="Edit campaign rotate")
    await expect(edit.get_by_label("Stop above bounce rate (%)")).to_have_value("3")
    await expect(edit.get_by_label("Stop above complaint rate (%)")).to_have_value("0.2")
    await expect(edit.get_by_label("Subject")).to_have_value("Hello {{ first_name }}")
    await expect(edit.get_by_label(f"kim@{SECOND}")).to_be_checked()
    await expect(edit.get_by_label(f"joe@{ZONE}")).not_to_be_checked()
    await edit.get_by_label(f"joe@{ZONE}").check()
    await edit.get_by_label("Per hour (optional)").fill("5")
    await edit.get_by_label("Per day (optional)").fill("100")
    await edit.get_by_label("Stop above complaint rate (%)").fill("0.5")
    # A rule that needs at least one message: under its field.
    await edit.get_by_label("Once sent at least").fill("0")
    await edit.get_by_role("button", name="Save changes").click()
    await _invalid(page, "Once sent at least", "campaign-min-sample", "minSample")
    assert (await _campaign(dashboard_api, owner, tenant, "rotate"))[
        "spec"
    ] == spec  # nothing written
    await check_page(page, "campaign-edit", axe)
    await edit.get_by_label("Once sent at least").fill("250")
    await edit.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", level=1, name="Campaigns")).to_be_visible()
    edited = (await _campaign(dashboard_api, owner, tenant, "rotate"))["spec"]
    assert edited["throttle"] == {"perHour": 5, "perDay": 100, "perMailboxPerDay": 40}, edited
    assert edited["stopRules"] == {
        "maxBounceRate": 0.03,
        "maxComplaintRate": 0.005,
        "window": "24h",
        "minSample": 250,
    }, edited
    assert edited["rotation"]["mailboxes"][0] == {
        "sendingDomainRef": {"name": "dash"},
        "localParts": ["jane", "joe"],
    }, edited
    assert {k: edited[k] for k in ("from", "subject", "text", "audience", "paused")} == {
        k: spec[k] for k in ("from", "subject", "text", "audience", "paused")
    }
    phases.done("edit")

    # A stale copy: someone else changes the campaign while the form is open.
    await (
        page.get_by_role("listitem", name="Campaign rotate")
        .get_by_role("link", name="Edit rotate")
        .click()
    )
    await expect(edit.get_by_label("Per hour (optional)")).to_have_value("5")
    async with dashboard_api.client(owner) as http:
        changed = await http.patch(
            f"/v1/tenants/{tenant.name}/campaigns/rotate",
            json={"spec": {"throttle": {"perHour": 7}}},
        )
    assert changed.status_code == 200, changed.text
    await edit.get_by_label("Per day (optional)").fill("200")
    await edit.get_by_role("button", name="Save changes").click()
    await expect(
        page.get_by_role("alert").filter(has_text="Someone else changed this campaign")
    ).to_be_visible()
    # Nothing of the stale copy was written; the form now shows the other change.
    assert (await _campaign(dashboard_api, owner, tenant, "rotate"))["spec"]["throttle"][
        "perDay"
    ] == 100
    await expect(edit.get_by_label("Per hour (optional)")).to_have_value("7")
    await expect(edit.get_by_label("Per day (optional)")).to_have_value("100")
    await check_page(page, "campaign-edit-stale", axe)
    await edit.get_by_label("Per day (optional)").fill("200")
    await edit.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", level=1, name="Campaigns")).to_be_visible()
    throttle = (await _campaign(dashboard_api, owner, tenant, "rotate"))["spec"]["throttle"]
    assert throttle == {"perHour": 7, "perDay": 200, "perMailboxPerDay": 40}, throttle
    phases.done("stale-edit")

    # The edit page at 360 px: no sideways scrolling, axe-core clean.
    session = await page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    narrow = await new_page(browser, dashboard_api.url, width=360)
    await narrow.goto("/")
    await narrow.evaluate(RESTORE_SESSION, session)
    await narrow.goto("/#/campaigns/rotate/edit")
    await narrow.reload()
    await expect(narrow.get_by_label("Per hour (optional)")).to_have_value("7")
    await check_page(narrow, "campaign-edit-360px", axe)
    await _no_sideways_scrolling(narrow, "campaigns/rotate/edit")
    assert axe == {}, json.dumps(axe, indent=2)
    phases.done("narrow-and-accessibility")
