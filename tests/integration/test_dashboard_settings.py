"""The dashboard's settings and the MFA step at sign-in, in Debian's Chromium against the real
API process: MFA on (the master key), billing on against stripe-mock (the chart's RBAC with
billing, billing's own login), loopback allowed as a webhook destination (PM_EGRESS_ALLOW, as
every test server is on loopback), and the webhook dispatcher as its own process.

An owner turns MFA on (secret and otpauth URI shown, a wrong code refused under the field, the
recovery codes shown once), signs out and back in with a TOTP code (computed with the project's
RFC 6238 code, `common/totp.py`); invites an address (the token shown once, accepted through the
API), changes the new member's role and is refused demoting the last owner; adds a webhook
endpoint (a bad URL refused under the field) whose secret verifies what a local receiver gets,
and sees the delivery in the endpoint's log; sees the plan, usage, invoices and a portal link.
Each page is screenshotted, checked by axe-core, and at 360 px (signed in there with a recovery
code) for sideways scrolling."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client
from playwright.async_api import Browser, expect

from penguinmails.api.billing.plans import Plan, put_plan
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.accounts import Role
from penguinmails.common.webhook_events import campaign_state_changed
from penguinmails.devstack.stripe_mock import StripeMock
from tests.integration.api_stack import (
    PASSWORD,
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    chart_api_identity,
    make_tenant,
    make_user,
    sign_in,
    start_api,
    stop_api,
)
from tests.integration.billing_support import WEBHOOK_SECRET, billing_database_url
from tests.integration.conftest import GROUP, VERSION, Cluster
from tests.integration.dashboard_support import (
    DIST,
    Phases,
    browser,
    check_page,
    goto,
    new_page,
    sign_in_page,
)
from tests.integration.test_api_mfa import Authenticator
from tests.integration.test_webhooks import Receiver, serving

pytestmark = pytest.mark.integration

__all__ = [  # fixtures used by name
    "api_database_url",
    "api_kubeconfig",
    "billing_database_url",
    "browser",
]

MASTER_KEY = "dashboard-settings-master-key-0123456789"
STARTER = Plan(Tier.STARTER, "price_dashStarterM", None, 10_000, False)
SENT = 2_500
CUSTOMER = "cus_dashSettings"
SETTINGS = ("settings/members", "settings/webhooks", "settings/billing", "settings/security")


@pytest.fixture(scope="module")
def billing_kubeconfig(
    cluster: Cluster,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    api_kubeconfig: Path,  # first: its teardown deletes the module's tenant namespaces
) -> Iterator[Path]:
    with chart_api_identity(
        cluster, api_client, core, "billing.stripe.secretName=penguinmails-stripe"
    ) as kubeconfig:
        yield kubeconfig


@pytest.fixture(scope="module")
def settings_api(
    billing_kubeconfig: Path,
    api_database_url: str,
    billing_database_url: str,
    redis_url: str,
    stripe_mock: StripeMock,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    assert (DIST / "index.html").is_file(), "the dashboard is not built: run `make web`"
    process, server = start_api(
        tmp_path_factory.mktemp("api-settings"),
        database_url=api_database_url,
        redis_url=redis_url,
        kubeconfig=billing_kubeconfig,
        PM_DASHBOARD_DIR=str(DIST),
        PM_SUPPRESSION_KEY=MASTER_KEY,
        PM_STRIPE_API_KEY="sk_test_dashsettings",
        PM_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        PM_STRIPE_API_BASE=stripe_mock.url,
        PM_BILLING_DATABASE_URL=billing_database_url,
        PM_EGRESS_ALLOW="127.0.0.0/8",
    )
    yield server
    stop_api(process)
    text = server.log()
    assert "Traceback" not in text, text[-4000:]
    assert MASTER_KEY not in text and "sk_test_dashsettings" not in text


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(
    settings_api: ApiServer,
    db_pool: asyncpg.Pool,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
) -> AsyncIterator[TenantSetup]:
    """A tenant as the operator and billing leave it: its row, its namespace, its Tenant with a
    Stripe customer, the month's count in its status, and the starter plan on sale."""
    made = await make_tenant(db_pool, core, "dashset")
    await put_plan(db_pool, STARTER)
    objects = client.CustomObjectsApi(api_client)
    spec = {
        "tier": "starter",
        "contactEmail": f"ops@{made.name}.example.com",
        "billing": {"stripeCustomerId": CUSTOMER, "stripeSubscriptionId": "sub_dashSettings"},
    }
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": made.name}}
    objects.create_cluster_custom_object(GROUP, VERSION, "tenants", {**body, "spec": spec})
    objects.patch_cluster_custom_object_status(
        GROUP, VERSION, "tenants", made.name, {"status": {"emailsSentThisMonth": SENT}}
    )
    yield made
    objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", made.name)
    await db_pool.execute("DELETE FROM billing_plans WHERE tier = 'starter'")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as hook:
        yield hook


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dispatcher(postgres_dsn: str) -> AsyncIterator[None]:
    """The webhook dispatcher as its own process, with its defaults (it is woken by emit())."""
    env = {**os.environ, "PM_DATABASE_URL": postgres_dsn, "PM_EGRESS_ALLOW": "127.0.0.0/8"}
    env.pop("PM_WEBHOOK_RESCAN_SECONDS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "penguinmails.common.webhook_dispatch",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    yield
    assert process.returncode is None, "the dispatcher exited early"
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, output.decode(errors="replace")[-4000:]
    assert "Traceback" not in output.decode(errors="replace")


async def test_settings_pages_and_the_mfa_step(
    settings_api: ApiServer,
    browser: Browser,
    tenant: TenantSetup,
    db_pool: asyncpg.Pool,
    receiver: Receiver,
    dispatcher: None,
) -> None:
    phases = Phases()
    email = await make_user(db_pool, tenant, Role.OWNER)
    base = f"/v1/tenants/{tenant.name}"
    axe: dict[str, list[dict[str, Any]]] = {}
    page = await new_page(browser, settings_api.url)
    await sign_in_page(page, email)
    phases.done("setup")

    # Keyboard: the main navigation's Settings entry opens the members, its tabs the rest.
    await page.get_by_role("link", name="Settings").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1, name="Members")).to_be_visible()
    tabs = page.get_by_role("navigation", name="Settings")
    await tabs.get_by_role("link", name="Security").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1, name="Security")).to_be_visible()

    # MFA on: the secret and its otpauth URI, a wrong code refused under the field, then the
    # recovery codes, shown once.
    await check_page(page, "settings-security-off", axe)
    await page.get_by_role("button", name="Set up an authenticator").click()
    secret = (await page.get_by_test_id("mfa-secret").inner_text()).strip()
    uri = await page.get_by_test_id("mfa-uri").get_attribute("href")
    assert uri is not None and uri.startswith("otpauth://totp/") and f"secret={secret}" in uri, uri
    app = Authenticator(secret)
    code_field = page.get_by_label("Code from the app")
    await code_field.fill("12345x")
    await page.get_by_role("button", name="Turn on MFA").click()
    await expect(code_field).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#mfa-confirm-code-error")).to_contain_text("code")
    await check_page(page, "settings-security-enroll", axe)
    await code_field.fill(await app.code())
    await page.get_by_role("button", name="Turn on MFA").click()
    codes_list = page.get_by_test_id("recovery-codes").get_by_role("listitem")
    await expect(codes_list.first).to_be_visible()
    codes = [c.strip() for c in await codes_list.all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10, codes
    await check_page(page, "settings-security-recovery-codes", axe)
    await page.get_by_role("button", name="I have saved them").click()
    await expect(page.get_by_text("Recovery codes left: 10.")).to_be_visible()
    await page.reload()
    await expect(page.get_by_text("Recovery codes left: 10.")).to_be_visible()
    assert codes[0] not in await page.content(), "the recovery codes are shown once only"
    phases.done("mfa-enroll")

    # Sign out, sign in: the password, then the second step (a wrong code first).
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Two-step sign-in")).to_be_visible()
    code_field = page.get_by_label("Authentication code")
    await expect(code_field).to_be_focused()
    await page.keyboard.type(app.expired())
    await page.keyboard.press("Enter")
    await expect(code_field).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#mfa-code-error")).to_contain_text("Wrong")
    await check_page(page, "sign-in-mfa", axe)
    await code_field.fill(await app.code())
    await page.keyboard.press("Enter")
    # Signed in, back on the page the tab was showing.
    await expect(page.get_by_text("Recovery codes left: 10.")).to_be_visible()
    phases.done("mfa-sign-in")

    # Members: invite (the token shown once) accepted through the API as a new account; the
    # new member's role changed; demoting the last owner refused, with the API's reason.
    await goto(page, "settings/members")
    invitee = f"invitee-{tenant.name}@example.com"
    await page.get_by_label("E-mail address to invite").fill("not an address")
    await page.get_by_role("button", name="Invite", exact=True).click()
    await expect(page.locator("#invite-email-error")).to_contain_text("email")
    await page.get_by_label("E-mail address to invite").fill(invitee)
    await page.get_by_role("button", name="Invite", exact=True).click()
    token = (await page.get_by_test_id("invitation-token").inner_text()).strip()
    await expect(page.get_by_role("button", name=f"Revoke invitation of {invitee}")).to_be_visible()
    await check_page(page, "settings-members-invited", axe)
    async with settings_api.client() as http:
        accepted = await http.post(
            "/v1/invitations/accept", json={"token": token, "password": PASSWORD}
        )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["role"] == "member"
    await page.reload()
    await expect(page.get_by_role("cell", name=invitee, exact=True)).to_be_visible()
    assert token not in await page.content(), "the invitation token is shown once only"
    await page.get_by_label(f"Role of {invitee}").select_option("admin")
    await page.get_by_role("button", name=f"Save role of {invitee}").click()
    await expect(page.get_by_role("button", name=f"Save role of {invitee}")).to_have_count(0)
    owner_token = await _mfa_sign_in(settings_api, email, app)
    async with settings_api.client(owner_token) as http:
        listed = (await http.get(f"{base}/members")).json()["data"]
    assert {m["email"]: m["role"] for m in listed} == {email: "owner", invitee: "admin"}
    await page.get_by_label(f"Role of {email}").select_option("viewer")
    await page.get_by_role("button", name=f"Save role of {email}").click()
    refusal = page.get_by_role("alert").filter(has_text="refused")
    await expect(refusal).to_contain_text(f"Change the role of {email} to viewer")
    await expect(refusal).to_contain_text("last owner")
    await expect(page.get_by_label(f"Role of {email}")).to_have_value("owner")
    await check_page(page, "settings-members-refused", axe)
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name=f"Remove {invitee}").click()
    await expect(page.get_by_role("cell", name=invitee, exact=True)).to_have_count(0)
    async with settings_api.client(owner_token) as http:
        listed = (await http.get(f"{base}/members")).json()["data"]
    assert [m["email"] for m in listed] == [email]
    phases.done("members")

    # Webhooks: a bad URL refused under the field; the endpoint made with its secret (shown
    # once); an event for it is posted by the dispatcher, verified by the receiver with that
    # secret, and its delivery shows in the endpoint's log.
    await goto(page, "settings/webhooks")
    await expect(page.get_by_text("No webhook endpoint yet")).to_be_visible()
    url_field = page.get_by_label("Endpoint URL")
    await url_field.fill("ftp://example.com/hooks")
    await page.get_by_role("button", name="Add endpoint").click()
    await expect(url_field).to_have_attribute("aria-invalid", "true")
    assert await page.locator("#webhook-url-error").inner_text()
    await url_field.fill(receiver.url)
    await page.get_by_role("button", name="Add endpoint").click()
    receiver.secret = (await page.get_by_test_id("webhook-secret").inner_text()).strip()
    assert receiver.secret.startswith("whsec_"), receiver.secret
    await check_page(page, "settings-webhooks-created", axe)
    # The event the operator's Campaign reconcile emits when a campaign's phase changes.
    async with tenant_connection(db_pool, tenant.id) as conn:
        await campaign_state_changed(conn, tenant.namespace, "launch", "Paused", "Sending")
    endpoint = page.get_by_role("listitem", name=f"Endpoint {receiver.url}")
    log = endpoint.get_by_role("table", name=f"Deliveries to {receiver.url}")
    row = log.get_by_role("row").filter(has_text="campaign.state_changed")
    await expect(row).to_contain_text("succeeded", timeout=60_000)
    await expect(row).to_contain_text("200")
    assert receiver.refused_signatures == 0
    assert [(e["type"], e["data"]["phase"]) for _, e in receiver.events()] == [
        ("campaign.state_changed", "Paused")
    ]
    await check_page(page, "settings-webhooks-log", axe)
    await endpoint.get_by_role("button", name=re.compile("^Disable")).click()
    await expect(endpoint.get_by_text("Disabled", exact=True)).to_be_visible()
    async with settings_api.client(owner_token) as http:
        (hook,) = (await http.get(f"{base}/webhook-endpoints")).json()["data"]
    assert hook["enabled"] is False and hook["url"] == receiver.url
    page.once("dialog", lambda dialog: dialog.accept())
    await endpoint.get_by_role("button", name=re.compile("^Delete")).click()
    await expect(page.get_by_text("No webhook endpoint yet")).to_be_visible()
    phases.done("webhooks")

    # Billing: the plan and usage from the Tenant, the invoices and a portal link from Stripe.
    await goto(page, "settings/billing")
    await expect(page.get_by_role("heading", name="Plan: starter")).to_be_visible()
    await expect(
        page.get_by_text(f"{SENT:,} of {STARTER.emails_per_month:,} (25%)")
    ).to_be_visible()
    async with settings_api.client(owner_token) as http:
        invoices = (await http.get(f"{base}/billing/invoices")).json()["data"]
    assert invoices, "stripe-mock lists invoices for any customer"
    table = page.get_by_role("table", name="Invoices")
    for invoice in invoices:
        await expect(table).to_contain_text(invoice["number"] or invoice["id"])
    await page.get_by_role("button", name="Open the customer portal").click()
    link = page.get_by_test_id("stripe-link")
    await expect(link).to_contain_text("Stripe customer portal")
    href = await link.get_attribute("href")
    assert href is not None and href.startswith("https://"), href
    await check_page(page, "settings-billing", axe)
    phases.done("billing")

    # At 360 px, signed in with a recovery code: no settings page scrolls sideways.
    narrow = await new_page(browser, settings_api.url, width=360)
    await narrow.goto("/")
    await narrow.get_by_label("E-mail address").fill(email)
    await narrow.get_by_label("Password").fill(PASSWORD)
    await narrow.keyboard.press("Enter")
    await narrow.get_by_role("button", name="Use a recovery code instead").click()
    await narrow.get_by_label("Recovery code").fill(codes[0])
    await narrow.keyboard.press("Enter")
    await expect(narrow.get_by_role("heading", level=1, name="Overview")).to_be_visible()
    for path in SETTINGS:
        await goto(narrow, path)
        await narrow.wait_for_load_state("networkidle")
        await check_page(narrow, f"{path.replace('/', '-')}-360px", axe)
        overflow = await narrow.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways at 360 px by {overflow}px"
    # The last page is Security: one recovery code fewer; MFA off with a code from the app.
    await expect(narrow.get_by_text("Recovery codes left: 9.")).to_be_visible()
    await narrow.get_by_label("Code from the app").fill(await app.code())
    await narrow.get_by_role("button", name="Turn off MFA").click()
    await expect(narrow.get_by_role("button", name="Set up an authenticator")).to_be_visible()
    assert (await sign_in(settings_api, email))["accessToken"], "signed in without MFA again"
    phases.done("narrow-pages")
    assert axe == {}, json.dumps(axe, indent=2)


async def _mfa_sign_in(api: ApiServer, email: str, app: Authenticator) -> str:
    """Tokens through the API's two steps, to check what the pages did."""
    challenge = await sign_in(api, email)
    async with api.client() as http:
        answer = await http.post(
            "/v1/auth/mfa", json={"mfaToken": challenge["mfaToken"], "code": await app.code()}
        )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["accessToken"]
    return token
