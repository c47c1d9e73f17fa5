"""The overview's per-day charts and the platform administrators' pages in a real browser
(Debian's Chromium driven by Playwright) against the real stack: the API as its own process
serving the built dashboard, the operator reconciling a Tenant and an SmtpServer.

The tenant's ledger is written the way the sender writes it (contacts imported, the campaign
enqueued, deliveries claimed and their outcomes recorded with the tenant's own login, a late
bounce and a complaint as the intake records them); the overview shows exactly those figures,
as the API's per-day series does. An administrator (MFA enrolled through the API) suspends a
tenant with a reason, resumes it and changes its tier (checked on the Tenant resource), and
sees the plans, the queues (the deliveries left waiting, per server) and the infrastructure
(the SmtpServer and its health as the operator reports it). A member sees no admin page and
the API refuses them. Every page: screenshot, axe-core, 360 px. The overview's load time is
printed beside the sign-in page's (same scripts, no API answers to wait for)."""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client
from playwright.async_api import Browser, Page, expect

from penguinmails.common import totp
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.accounts import Role
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    DeliveryState,
    Outcome,
    Relay,
    claim,
    enqueue,
    mark_bounced,
    mark_complained,
    record,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    make_tenant,
    make_user,
    sign_in,
)
from tests.integration.conftest import GROUP, VERSION, OperatorProcess, wait_for
from tests.integration.dashboard_support import (
    DIST,
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

pytestmark = pytest.mark.integration

__all__ = [  # fixtures used by name
    "api_database_url",
    "api_kubeconfig",
    "browser",
    "dashboard_api",
    "knot",
    "operator",
]

KEY = b"dashboard-admin-suppression-key-0123456789"
SESSION = "penguinmails.session"
SERVER = "smtp-a"
DEFERRING = "relay-dash-deferring"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(
    dashboard_api: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> TenantSetup:
    return await make_tenant(db_pool, core, "dadm")


@pytest.fixture(scope="module")
def suspendable(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi
) -> Iterator[str]:
    """A Tenant resource the operator reconciles, for the administrator to suspend; deleted
    while this module's operator still runs, so its finalizer completes."""
    name = f"dsus-{secrets.token_hex(3)}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"tier": "starter", "contactEmail": "ops@example.com"},
    }
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    yield name
    custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)

    def gone() -> bool:
        items = custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")["items"]
        return all(t["metadata"]["name"] != name for t in items)

    wait_for(gone, timeout=120, what=f"Tenant {name} deleted")


def plan() -> CampaignPlan:
    return CampaignPlan(
        from_address=f"hello@{ZONE}",
        subject="Hello",
        text="Hi {{ first_name }}",
        domain=ZONE,
        dkim_secret="dashboard-dkim",
        unsubscribe_url="https://u.example/u",
        unsubscribe_mailto=f"unsubscribe@{ZONE}",
        postal_address="1 Penguin Way",
        relays=[Relay(name="relay-a", host="127.0.0.1", port=9)],
    )


async def send_through_the_ledger(
    pool: asyncpg.Pool, postgres_dsn: str, tenant: TenantSetup
) -> dict[str, int]:
    """Seven contacts: four sent (one bounces later by DSN, one complains, one replies), one
    bounced at the relay, one deferred by another server, one left queued. What the overview
    must show."""
    uid = uuid.uuid4()
    csv = "email,first_name\n" + "".join(f"r{i}@dest.test,R{i}\n" for i in range(7))
    async with tenant_connection(pool, tenant.id) as conn:  # the API's import, the operator
        report = await import_contacts(conn, "customers", csv.encode(), KEY)
        assert report.imported == 7, report.errors
        await upsert_campaign(conn, uid=uid, namespace=tenant.namespace, name="launch", plan=plan())
        assert await enqueue(conn, uid, ["customers"]) == 7
        await set_sending(conn, uid, True)
    # The sender, with the tenant's own login: claims six, records their outcomes.
    password = new_password()
    role = await ensure_tenant_login(pool, tenant.id, password)
    sender = await asyncpg.connect(with_login(postgres_dsn, role, password))
    try:
        async with sender.transaction():
            claimed = await claim(sender, "sender-1", 6, timedelta(minutes=5))
        assert len(claimed) == 6
        sent, bounced, deferred = claimed[:4], claimed[4], claimed[5]
        outcomes = [
            *(
                Outcome(c.id, DeliveryState.SENT, code=250, status="2.0.0", relay="relay-a")
                for c in sent
            ),
            Outcome(
                bounced.id,
                DeliveryState.BOUNCED,
                code=550,
                status="5.1.1",
                reason="550 5.1.1 user unknown",
                relay="relay-a",
            ),
            Outcome(
                deferred.id,
                DeliveryState.DEFERRED,
                code=451,
                status="4.7.1",
                reason="451 4.7.1 try later",
                retry_in=timedelta(hours=1),
                relay=DEFERRING,
            ),
        ]
        async with sender.transaction():
            assert await record(sender, outcomes, "sender-1") == 6
    finally:
        await sender.close()
    # The intake: a late DSN for one sent message, a complaint about another.
    async with tenant_connection(pool, tenant.id) as conn:
        assert await mark_bounced(conn, sent[0].id, "5.1.1", "550 5.1.1 gone") is not None
        assert await mark_complained(conn, sent[1].id) is not None
        # A reply, as the intake records it (sender/replies.py; test_sender_replies.py).
        await conn.execute("UPDATE deliveries SET replied_at = now() WHERE id = $1", sent[2].id)
    return {"sent": 4, "delivered": 3, "bounced": 2, "complaints": 1, "replies": 1}


def make_platform_admin(postgres_dsn: str, email: str) -> None:
    """The flag only the platform's database login sets, through the CLI an operator runs."""
    env = {"PATH": os.environ["PATH"], "PYTHONSAFEPATH": "1", "PM_DATABASE_URL": postgres_dsn}
    done = subprocess.run(
        [sys.executable, "-m", "penguinmails.api.http", "platform-admin", email],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def admin_session(api: ApiServer, db_pool: asyncpg.Pool, postgres_dsn: str) -> str:
    """An administrator's sign-in that proved a second factor (enrolled and confirmed through
    the API in this sign-in), as the tab's session storage holds it."""
    email = await make_user(db_pool, None, Role.VIEWER)
    make_platform_admin(postgres_dsn, email)
    tokens = await sign_in(api, email)
    async with api.client(tokens["accessToken"]) as http:
        secret = (await http.post("/v1/me/mfa/enroll")).json()["secret"]
        confirmed = await http.post(
            "/v1/me/mfa/confirm", json={"code": totp.code_at(secret, time.time())}
        )
        assert confirmed.status_code == 200, confirmed.text
        me = (await http.get("/v1/me")).json()
    assert me["platformAdmin"] is True, me
    session = {"accessToken": tokens["accessToken"], "refreshToken": tokens["refreshToken"]}
    return json.dumps({SESSION: json.dumps(session)})


async def open_signed_in(browser: Browser, url: str, session: str, width: int = 1280) -> Page:
    page = await new_page(browser, url, width)
    await page.goto("/favicon.ico")  # the origin, to hold the session
    await page.evaluate(
        "s => Object.entries(JSON.parse(s)).forEach(([k, v]) => sessionStorage.setItem(k, v))",
        session,
    )
    return page


async def no_sideways_scroll(page: Page, name: str) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{name} scrolls sideways at 360 px by {overflow}px"


ADMIN_PAGES = {
    "admin-tenants": "Tenants",
    "admin-plans": "Plans",
    "admin-queues": "Queues",
    "admin-infrastructure": "Infrastructure",
}


async def goto_admin(page: Page, route: str) -> None:
    await page.goto(f"/#/{route}")
    await expect(page.get_by_role("heading", level=1, name=ADMIN_PAGES[route])).to_be_visible()


async def test_overview_series_and_the_admin_panel(
    dashboard_api: ApiServer,
    browser: Browser,
    tenant: TenantSetup,
    suspendable: str,
    db_pool: asyncpg.Pool,
    postgres_dsn: str,
    custom_objects: client.CustomObjectsApi,
) -> None:
    phases = Phases()
    axe: dict[str, list[dict[str, Any]]] = {}
    expected = await send_through_the_ledger(db_pool, postgres_dsn, tenant)
    owner_email = await make_user(db_pool, tenant, Role.OWNER)
    owner = (await sign_in(dashboard_api, owner_email))["accessToken"]
    base = f"/v1/tenants/{tenant.name}"
    async with dashboard_api.client(owner) as http:
        made = await http.post(
            f"{base}/smtp-servers",
            json={
                "name": SERVER,
                "spec": {
                    "provider": {"relay": {"host": "127.0.0.1", "port": 9}},
                    "hostname": f"smtp.{ZONE}",
                },
            },
        )
        assert made.status_code == 201, made.text
        series = (await http.get(f"{base}/deliveries/daily")).json()
        backwards = await http.get(
            f"{base}/deliveries/daily", params={"since": "2026-03-02", "until": "2026-03-01"}
        )
        too_long = await http.get(
            f"{base}/deliveries/daily", params={"since": "2024-01-01", "until": "2026-01-01"}
        )
        refused = await http.get("/v1/admin/queues")
    # The API's series: 30 days ending today, today's figures those written, zeros elsewhere.
    today = datetime.now(UTC).date().isoformat()
    assert len(series["data"]) == 30 and series["until"] == today, series
    days = {d["day"]: d for d in series["data"]}
    assert {k: days[today][k] for k in expected} == expected, days[today]
    assert all(not any(d[k] for k in expected) for day, d in days.items() if day != today)
    for answer, param in ((backwards, "since"), (too_long, "since")):
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    assert refused.status_code == 403, refused.text
    phases.done("setup")

    # A member: the overview's charts show the ledger's figures; no admin page, refused.
    page = await new_page(browser, dashboard_api.url)
    await sign_in_page(page, owner_email)
    for name, value in expected.items():
        await expect(page.get_by_test_id(f"total-{name}")).to_have_text(str(value))
    await expect(
        page.get_by_role("img", name="Sent, delivered, bounced, complaints and replies per day")
    ).to_be_visible()
    await page.get_by_text("Figures per day", exact=True).click()
    row = page.get_by_role("row", name=today)
    await expect(row).to_have_text(
        f"{today}{expected['sent']}{expected['delivered']}{expected['bounced']}"
        f"{expected['complaints']}{expected['replies']}"
    )
    await check_page(page, "overview-series", axe)
    nav = page.get_by_role("navigation", name="Main")
    for label in ADMIN_PAGES.values():
        await expect(nav.get_by_role("link", name=label, exact=True)).to_have_count(0)
    await page.goto("/#/admin-queues")
    await expect(page.get_by_text("This page is for platform administrators only.")).to_be_visible()
    await check_page(page, "admin-refused", axe)
    member_session = await page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    phases.done("member")

    # An administrator (second factor proved through the API) in another tab.
    session = await admin_session(dashboard_api, db_pool, postgres_dsn)
    admin = await open_signed_in(browser, dashboard_api.url, session)
    await goto_admin(admin, "admin-tenants")
    nav = admin.get_by_role("navigation", name="Main")
    for label in ADMIN_PAGES.values():
        await expect(nav.get_by_role("link", name=label, exact=True)).to_have_count(1)

    def tenant_spec() -> dict[str, Any]:
        found = custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", suspendable)
        return dict(found["spec"])

    row = admin.get_by_role("row", name=suspendable)
    await expect(row).to_contain_text("Active")
    await row.get_by_role("button", name=f"Suspend {suspendable}").click()
    form = admin.get_by_role("form", name=f"Suspend {suspendable}")
    await form.get_by_role("button", name="Confirm suspension").click()  # no reason yet
    await expect(form.get_by_label("Reason")).to_have_attribute("aria-invalid", "true")
    assert await admin.locator("#suspend-reason-error").inner_text()
    assert tenant_spec().get("suspended") is not True
    reason = "Abuse report 42: bulk complaints"
    await form.get_by_label("Reason").fill(reason)
    await form.get_by_role("button", name="Confirm suspension").click()
    await expect(row).to_contain_text("Suspended")
    await expect(row).to_contain_text(reason)
    spec = tenant_spec()
    assert spec["suspended"] is True and spec["suspendReason"] == reason, spec
    await check_page(admin, "admin-tenants-suspended", axe)
    await row.get_by_role("button", name=f"Resume {suspendable}").click()
    await expect(row).to_contain_text("Active")
    spec = tenant_spec()
    assert spec["suspended"] is False and "suspendReason" not in spec, spec
    await row.get_by_label(f"Tier of {suspendable}").select_option("business")
    await expect(row.get_by_label(f"Tier of {suspendable}")).to_have_value("business")
    assert tenant_spec()["tier"] == "business"
    phases.done("admin-tenants")

    await goto_admin(admin, "admin-plans")
    await check_page(admin, "admin-plans", axe)

    # Queues: the queued delivery (no server yet) and the deferred one.
    admin_token = json.loads(json.loads(session)[SESSION])["accessToken"]
    await goto_admin(admin, "admin-queues")
    async with dashboard_api.client(admin_token) as http:
        queues = (await http.get("/v1/admin/queues")).json()["data"]
    mine = next(q for q in queues if q["tenant"] == tenant.name)
    assert (mine["queued"], mine["deferred"], mine["sending"]) == (1, 1, 0), mine
    assert [(s["server"], s["queued"], s["deferred"]) for s in mine["servers"]] == [
        (None, 1, 0),
        (DEFERRING, 0, 1),
    ], mine
    await expect(admin.get_by_test_id(f"queued-{tenant.name}")).to_have_text("1")
    deferring = admin.get_by_role("row").filter(
        has=admin.get_by_role("rowheader", name=DEFERRING, exact=True)
    )
    await expect(deferring.get_by_role("cell")).to_have_text(["0", "1", "0", re.compile(r"\d")])
    await check_page(admin, "admin-queues", axe)
    phases.done("admin-queues")

    # Infrastructure: the tenant's server with the health the operator reported.

    async def ready_of_server() -> dict[str, Any] | None:
        async with dashboard_api.client(admin_token) as http:
            listed = (await http.get("/v1/admin/smtp-servers", params={"limit": 100})).json()
        for item in listed["data"]:
            if item["name"] == SERVER and item["tenant"] == tenant.name:
                conditions = (item.get("status") or {}).get("conditions") or []
                return next((c for c in conditions if c["type"] == "Ready"), None)
        return None

    deadline = time.monotonic() + 120
    ready = await ready_of_server()
    while ready is None and time.monotonic() < deadline:
        await admin.wait_for_timeout(1000)
        ready = await ready_of_server()
    assert ready is not None, "the operator reported no Ready condition for the server"
    await goto_admin(admin, "admin-infrastructure")
    server_row = admin.get_by_role("row").filter(has_text=tenant.name).filter(has_text=SERVER)
    await expect(server_row).to_contain_text(tenant.name)
    await expect(server_row).to_contain_text(
        "Healthy" if ready["status"] == "True" else "Needs attention"
    )
    await check_page(admin, "admin-infrastructure", axe)
    phases.done("admin-infrastructure")

    # Every page of this test at 360 px: no sideways scrolling.
    narrow = await open_signed_in(browser, dashboard_api.url, session, width=360)
    for route in ADMIN_PAGES:
        await goto_admin(narrow, route)
        await narrow.wait_for_load_state("networkidle")
        await check_page(narrow, f"{route}-360px", axe)
        await no_sideways_scroll(narrow, route)
    member_narrow = await open_signed_in(browser, dashboard_api.url, member_session, width=360)
    await goto(member_narrow, "overview")
    await expect(member_narrow.get_by_test_id("total-sent")).to_have_text(str(expected["sent"]))
    await check_page(member_narrow, "overview-series-360px", axe)
    await no_sideways_scroll(member_narrow, "overview")
    phases.done("narrow-pages")

    for tab in (page, admin, narrow, member_narrow):  # their polling would load the API
        await tab.context.close()
    await print_figures(browser, dashboard_api.url, member_session, expected["sent"])
    phases.done("figures")
    async with dashboard_api.client(owner) as http:
        deleted = await http.delete(f"{base}/smtp-servers/{SERVER}")
        assert deleted.is_success, deleted.text
    assert axe == {}, json.dumps(axe, indent=2)


LOADED_PROBE = """
new MutationObserver((_, observer) => {
  const total = document.querySelector('[data-testid="total-sent"]');
  const chart = document.querySelector('[role="img"][aria-label^="Sent, delivered"]');
  if (total && total.textContent === "SENT" && chart
      && document.body.textContent.includes("SERVER")) {
    window.__pmShown = performance.now();
    observer.disconnect();
  }
}).observe(document, {childList: true, subtree: true, characterData: true, attributes: true});
"""
"""Records in the page when the overview shows the figures, the server and the chart."""

SIGN_IN_PROBE = """
new MutationObserver((_, observer) => {
  if ([...document.querySelectorAll("h1, h2")].some(
      h => h.textContent === "Sign in to PenguinMails")) {
    window.__pmShown = performance.now();
    observer.disconnect();
  }
}).observe(document, {childList: true, subtree: true, characterData: true, attributes: true});
"""


async def print_figures(browser: Browser, url: str, session: str, sent: int) -> None:
    """The overview's initial load on loopback (signed in, empty cache, until the per-day
    figures and every health list are shown) beside a baseline measured in the same run: the
    sign-in page, the same scripts with no API answer to wait for. Printed, not asserted."""

    timings: list[tuple[str, int, int]] = []
    took_in_page: list[float] = []

    async def load(signed_in: bool) -> tuple[float, float, list[str]]:
        page = await new_page(browser, url)
        if signed_in:
            await page.goto("/favicon.ico")
            await page.evaluate(
                "s => Object.entries(JSON.parse(s)).forEach(([k, v]) => "
                "sessionStorage.setItem(k, v))",
                session,
            )
        scripts: list[str] = []
        page.on("response", lambda r: scripts.append(r.url) if r.url.endswith(".js") else None)
        # The moment the page itself shows what the expectations below wait for, from the
        # navigation's start: Playwright's polling adds its own intervals to `took`.
        await page.add_init_script(
            script=LOADED_PROBE.replace("SENT", str(sent)).replace("SERVER", SERVER)
            if signed_in
            else SIGN_IN_PROBE
        )
        started = time.monotonic()
        if signed_in:
            await page.goto("/#/overview")
            await expect(page.get_by_test_id("total-sent")).to_have_text(str(sent))
            await expect(page.get_by_role("region", name="SMTP servers")).to_contain_text(SERVER)
            await expect(
                page.get_by_role(
                    "img", name="Sent, delivered, bounced, complaints and replies per day"
                )
            ).to_be_visible()
        else:
            await page.goto("/")
            await expect(
                page.get_by_role("heading", name="Sign in to PenguinMails")
            ).to_be_visible()
        took = time.monotonic() - started
        shown = await page.evaluate("window.__pmShown")
        took_in_page.append(float(shown) if shown is not None else float("nan"))
        ready = await page.evaluate(
            "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
        )
        # When each request started and ended (ms from navigation), to see what delays the load.
        timings.clear()
        timings.extend(
            await page.evaluate(
                "performance.getEntriesByType('resource').map(e => "
                "[new URL(e.name).pathname.split('/').slice(-2).join('/'), "
                "Math.round(e.startTime), Math.round(e.responseEnd)])"
            )
        )
        await page.context.close()
        return took, ready, scripts

    # Alternated, three of each, medians: the shared machine's noise hits both alike.
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    in_page: dict[bool, list[float]] = {False: [], True: []}
    scripts: list[str] = []
    for _ in range(3):
        for signed_in in (False, True):
            took, ready_at, scripts_seen = await load(signed_in)
            runs[signed_in].append((took, ready_at))
            in_page[signed_in].append(took_in_page[-1])
            if signed_in:
                scripts = scripts_seen
    baseline, baseline_ready = (statistics.median(x) for x in zip(*runs[False], strict=True))
    loaded, ready = (statistics.median(x) for x in zip(*runs[True], strict=True))
    gzipped = sum(
        len(gzip.compress((DIST / urlparse(u).path.lstrip("/")).read_bytes(), 9)) for u in scripts
    )
    print(
        f"dashboard figures: overview with its per-day chart loaded in {loaded * 1000:.0f} ms on "
        f"loopback (page ready at {ready:.0f} ms; medians of 3); baseline, the sign-in page "
        f"(same main script, no API call): {baseline * 1000:.0f} ms (ready at "
        f"{baseline_ready:.0f} ms); {len(scripts)} scripts, {gzipped / 1024:.1f} KiB of "
        "JavaScript gzipped"
    )
    print(
        "dashboard figures, in the page (from the navigation's start to the first frame "
        f"showing it; medians of 3): overview {statistics.median(in_page[True]):.0f} ms, "
        f"sign-in page {statistics.median(in_page[False]):.0f} ms"
    )
    print("overview requests (start-end ms), last run:", timings)
