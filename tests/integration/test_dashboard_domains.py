"""The Domains page's DKIM rotation timeline in a real browser (Debian's Chromium driven by
Playwright) against the real stack: the API serving the built dashboard, the operator
generating, verifying (against a private Knot server), rotating and removing the keys.

A domain is added through the API and its records published; once its keys sign, a rotation
is asked for (the annotation a platform operator sets), the new keys' records are published,
and with `retireAfter: 3s` the old keys go Retiring, revoked, removed. The page then lists
each selector with its created, published, active, retiring and removed times, exactly as
the API's status says, as an ordered list per key, and the tenant's reply address with a copy
button; screenshot, axe-core, 360 px."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client
from playwright.async_api import Browser, expect

from penguinmails.common.db.accounts import Role
from penguinmails.common.keys import MasterKeys
from penguinmails.devstack.knot import KnotServer
from penguinmails.sender.bounces import token_from_address
from penguinmails.sender.replies import reply_tenant
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    make_tenant,
    make_user,
    sign_in,
)
from tests.integration.conftest import GROUP, VERSION
from tests.integration.dashboard_support import (
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
    operator,
    sign_in_page,
)
from tests.integration.test_dashboard import publish

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
    return await make_tenant(db_pool, core, "dkimtl")


def utc(value: str) -> str:
    """As the page writes a time: UTC, to the minute."""
    return value[:16].replace("T", " ") + " UTC"


async def test_the_dkim_rotation_timeline(
    dashboard_api: ApiServer,
    browser: Browser,
    tenant: TenantSetup,
    db_pool: asyncpg.Pool,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
) -> None:
    phases = Phases()
    email = await make_user(db_pool, tenant, Role.OWNER)
    owner = (await sign_in(dashboard_api, email))["accessToken"]
    url = f"/v1/tenants/{tenant.name}/sending-domains"
    axe: dict[str, list[dict[str, Any]]] = {}

    async def status() -> dict[str, Any]:
        async with dashboard_api.client(owner) as http:
            found = await http.get(f"{url}/{ZONE}")
        assert found.status_code == 200, found.text
        return dict(found.json().get("status") or {})

    async def until(what: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for _ in range(900):
            now = await status()
            if done(now):
                return now
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {now}")

    def selectors(s: dict[str, Any], state: str | None = None) -> set[str]:
        found = (s.get("dkim") or {}).get("selectors") or []
        return {k["selector"] for k in found if state is None or k["state"] == state}

    async with dashboard_api.client(owner) as http:
        made = await http.post(
            url,
            json={
                "name": ZONE,
                "spec": {
                    "domain": ZONE,
                    "dnsProvider": {"type": "manual"},
                    "dkim": {"retireAfter": "3s"},
                },
            },
        )
    assert made.status_code == 201, made.text
    first = await until("the records", lambda s: bool(s.get("records")) and len(selectors(s)) == 2)
    publish(knot, first["records"])
    signing = await until("the first keys to sign", lambda s: len(selectors(s, "Active")) == 2)
    old = selectors(signing)
    phases.done("first-keys")

    # A rotation now; the new keys' records published as the page lists them.
    custom_objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        tenant.namespace,
        "sendingdomains",
        ZONE,
        {"metadata": {"annotations": {"penguinmails.io/rotate-dkim": "now"}}},
    )

    # The new keys show in status at once (the rotation's first step); their records follow
    # later in the same pass, so wait for the records, not only the selectors.
    def new_records(s: dict[str, Any]) -> list[dict[str, Any]]:
        fresh = selectors(s) - old
        return [r for r in s.get("records") or [] if r["name"].split("._domainkey.")[0] in fresh]

    pending = await until(
        "the new keys' records", lambda s: len(selectors(s) - old) == 2 == len(new_records(s))
    )
    publish(knot, new_records(pending))

    def removed(s: dict[str, Any]) -> set[str]:
        return {r["selector"] for r in (s.get("dkim") or {}).get("removed") or []}

    final = await until("the old keys removed", lambda s: removed(s) == old)
    new = selectors(final)
    assert new and not new & old and selectors(final, "Active") == new
    phases.done("rotated")

    # The page: every selector, current and removed, with the times the status holds.
    page = await new_page(browser, dashboard_api.url)
    await sign_in_page(page, email)
    # The overview's answer first (the domain's health): the sign-in's navigation is over.
    await expect(page.get_by_role("region", name="Sending domains")).to_contain_text(ZONE)
    await goto(page, "domains")
    await page.get_by_role("button", name="Show records").click()
    section = page.get_by_role("region", name=f"DKIM key rotation of {ZONE}")
    await expect(section).to_be_visible()
    final = await status()  # as the page last loaded it (it polls; nothing moves any more)
    dkim = final["dkim"]
    lives = [(k["selector"], k["state"], k, "removeAt") for k in dkim["selectors"]] + [
        (r["selector"], "Removed", r, "removedAt") for r in dkim["removed"]
    ]
    assert len(lives) == 4
    for selector, state, times, removal in lives:
        steps = section.get_by_role("list", name=f"Timeline of {selector}", exact=True).get_by_role(
            "listitem"
        )
        await expect(steps).to_have_count(5)
        name = f"{selector} {times['algorithm']} {state}"
        heading = section.get_by_role("heading", level=3, name=name, exact=True)
        await expect(heading).to_be_visible()
        for i, (label, field) in enumerate(
            [
                ("Created", "createdAt"),
                ("Published", "publishedAt"),
                ("Active", "activatedAt"),
                ("Retiring", "retiringAt"),
                ("Removed", removal),
            ]
        ):
            text = f"{label}{utc(times[field])}" if times.get(field) else f"{label}not yet"
            await expect(steps.nth(i)).to_have_text(text)
    # The old keys: every step happened, removal last.
    for life in dkim["removed"]:
        order = [life[f] for f in ("createdAt", "publishedAt", "activatedAt", "retiringAt")]
        assert order == sorted(order) and order[-1] <= life["removedAt"], life
    # The reply address (docs/sending.md, Replies): the API's, shown with a copy button, and
    # its token names this tenant; a malformed domain is refused naming the parameter.
    async with dashboard_api.client(owner) as http:
        answer = await http.get(f"/v1/tenants/{tenant.name}/reply-address", params={"domain": ZONE})
        refused = await http.get(
            f"/v1/tenants/{tenant.name}/reply-address", params={"domain": "not a domain"}
        )
    assert answer.status_code == 200, answer.text
    address = answer.json()["address"]
    assert address.startswith("replies+") and address.endswith(f"@{ZONE}"), address
    keys = MasterKeys.parse(SUPPRESSION_KEY)
    assert reply_tenant(keys, token_from_address(address)) == tenant.id
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "domain", refused.text
    replies = page.get_by_role("region", name=f"Replies to {ZONE}")
    await expect(replies.get_by_test_id("reply-address")).to_have_text(address)
    await replies.get_by_role("button", name="Copy reply address").click()
    assert await page.evaluate("navigator.clipboard.readText()") == address
    await check_page(page, "domains-dkim-timeline", axe)

    narrow = await new_page(browser, dashboard_api.url, width=360)
    await narrow.goto("/favicon.ico")
    session = await page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    await narrow.evaluate(RESTORE_SESSION, session)
    await goto(narrow, "domains")
    await narrow.get_by_role("button", name="Show records").click()
    await expect(narrow.get_by_role("region", name=f"DKIM key rotation of {ZONE}")).to_be_visible()
    overflow = await narrow.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the Domains page scrolls sideways at 360 px by {overflow}px"
    await check_page(narrow, "domains-dkim-timeline-360", axe)
    assert not axe, axe
    phases.done("page")
