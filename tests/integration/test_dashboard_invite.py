"""The dashboard's invitation accept page (/accept-invitation#token=..., web/src/pages/
AcceptInvitation.tsx) and its recent contact imports, in Debian's Chromium against the real API
process, which e-mails invitations through the platform's relay (a real Postfix, STARTTLS) to a
recipient sink, as in production.

An owner invites an address with no account (as admin) and an existing user (as viewer) by
e-mail; each invitee opens the link from the e-mail they received: the page shows the tenant and
the role, the first creates an account there, the second signs in there, and both accept; each
is then a member with the invited role (the Members page and the API say so). A used link is
refused with what to do. The Contacts page lists the tenant's imports newest first. Every page
is screenshotted and checked by axe-core."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from kubernetes import client
from playwright.async_api import Browser, Page, expect

from penguinmails.common.db.accounts import Role
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer
from tests.integration.api_stack import (
    PASSWORD,
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    make_tenant,
    make_user,
    sign_in,
    start_api,
    stop_api,
)
from tests.integration.dashboard_support import (
    DIST,
    browser,
    check_page,
    goto,
    new_page,
    sign_in_page,
)
from tests.integration.test_api_invitation_emails import (
    ACCEPT_URL,
    MASTER_KEY,
    arrived,
    link_token,
    mail,
    relay_env,
)

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "browser", "mail"]  # fixtures used by name

NEW_PASSWORD = "penguins in a row, twelve+"
SLOW = 60_000
"""Milliseconds a step that hashes a password may take on this shared machine."""
LINK = re.compile(r"https?://\S+/accept-invitation#token=\S+")


@pytest.fixture(scope="module")
def invite_api(
    mail: tuple[SinkServer, PostfixServer],
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """The API serving the built dashboard, e-mailing invitations through the relay."""
    assert (DIST / "index.html").is_file(), "the dashboard is not built: run `make web`"
    _, relay = mail
    process, server = start_api(
        tmp_path_factory.mktemp("api-invite"),
        database_url=api_database_url,
        redis_url=redis_url,
        kubeconfig=api_kubeconfig,
        PM_DASHBOARD_DIR=str(DIST),
        **relay_env(relay),
    )
    yield server
    stop_api(process)
    text = server.log()
    assert "Traceback" not in text, text[-4000:]
    assert MASTER_KEY not in text


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(db_pool: asyncpg.Pool, core: client.CoreV1Api) -> TenantSetup:
    return await make_tenant(db_pool, core, "dashinvite")


async def _invite(api: ApiServer, owner: str, tenant: TenantSetup, address: str, role: str) -> None:
    async with api.client(owner) as http:
        made = await http.post(
            f"/v1/tenants/{tenant.name}/invitations", json={"email": address, "role": role}
        )
    assert made.status_code == 201, made.text
    assert made.json()["emailDelivery"]["status"] == "sent", made.text
    assert made.json()["token"] is None  # e-mailed: the inviter never sees it


async def _opened_link(sink: SinkServer, address: str) -> tuple[str, str]:
    """(the accept page's path and fragment as the e-mail links it, the token)."""
    message = await arrived(sink, address)
    token = link_token(message)
    body = message.get_body(("plain",))
    assert body is not None
    (link,) = set(LINK.findall(body.get_content()))
    assert link == f"{ACCEPT_URL}#token={token}"
    return link.removeprefix(ACCEPT_URL.removesuffix("/accept-invitation")), token


async def _members(api: ApiServer, owner: str, tenant: TenantSetup) -> dict[str, str]:
    async with api.client(owner) as http:
        listed = await http.get(f"/v1/tenants/{tenant.name}/members")
    assert listed.status_code == 200, listed.text
    return {m["email"]: m["role"] for m in listed.json()["data"]}


async def _shows_the_offer(page: Page, tenant: TenantSetup, role: str) -> None:
    await expect(page.get_by_role("heading", level=1, name=f"Join {tenant.name}")).to_be_visible()
    await expect(page.get_by_test_id("invitation-tenant")).to_have_text(tenant.name)
    await expect(page.get_by_test_id("invitation-role")).to_contain_text(role)


async def test_an_invitee_accepts_the_emailed_link_in_the_browser(
    invite_api: ApiServer,
    mail: tuple[SinkServer, PostfixServer],
    browser: Browser,
    db_pool: asyncpg.Pool,
    tenant: TenantSetup,
) -> None:
    sink, _ = mail
    owner = (await sign_in(invite_api, await make_user(db_pool, tenant, Role.OWNER)))["accessToken"]
    axe: dict[str, list[dict[str, Any]]] = {}

    # A new address, invited as admin: it makes its account on the page.
    newcomer = f"newcomer-{tenant.name}@example.com"
    await _invite(invite_api, owner, tenant, newcomer, "admin")
    path, token = await _opened_link(sink, newcomer)
    page = await new_page(browser, invite_api.url)
    await page.goto(path)
    await _shows_the_offer(page, tenant, "admin")
    await expect(page.get_by_text(newcomer).first).to_be_visible()
    await check_page(page, "accept-invitation-new-account", axe)
    await page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("Password again").fill(NEW_PASSWORD + "typo")
    await page.get_by_role("button", name=f"Create the account and join {tenant.name}").click()
    await expect(page.get_by_text("The two passwords differ")).to_be_visible()
    await page.get_by_label("Password again").fill(NEW_PASSWORD)
    await page.get_by_role("button", name=f"Create the account and join {tenant.name}").click()
    # Signed in and in the dashboard, on the tenant joined (after two argon2 hashes: an account
    # made, then signed in); its members include the newcomer.
    await expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible(timeout=SLOW)
    await goto(page, "settings/members")
    row = page.get_by_role("row").filter(has_text=newcomer)
    await expect(row).to_contain_text("admin")
    await check_page(page, "accept-invitation-joined-members", axe)
    assert (await _members(invite_api, owner, tenant))[newcomer] == "admin"

    # The link is spent: opened again, it says so and what to do.
    used = await new_page(browser, invite_api.url)
    await used.goto(path)
    await expect(used.get_by_role("alert")).to_contain_text("cannot be used")
    await check_page(used, "accept-invitation-used", axe)
    async with httpx.AsyncClient(base_url=invite_api.url) as http:
        again = await http.post("/v1/invitations/lookup", json={"token": token})
    assert again.status_code == 404 and again.json()["error"]["param"] == "token"

    # An existing user, invited as viewer: signs in on the page (the sign-in form), accepts.
    existing = await make_user(db_pool, None, Role.VIEWER)
    await _invite(invite_api, owner, tenant, existing, "viewer")
    path, _ = await _opened_link(sink, existing)
    second = await new_page(browser, invite_api.url)
    await second.goto(path)
    await _shows_the_offer(second, tenant, "viewer")
    await second.get_by_role("button", name="Sign in to accept").click()
    await second.get_by_label("E-mail address").fill(existing)
    await second.get_by_label("Password").fill(PASSWORD)
    await second.get_by_role("button", name="Sign in").click()
    await expect(second.get_by_role("button", name=f"Accept and join {tenant.name}")).to_be_visible(
        timeout=SLOW
    )
    await _shows_the_offer(second, tenant, "viewer")
    await check_page(second, "accept-invitation-signed-in", axe)
    await second.get_by_role("button", name=f"Accept and join {tenant.name}").click()
    await expect(second.get_by_role("heading", level=1, name="Overview")).to_be_visible(
        timeout=SLOW
    )
    assert (await _members(invite_api, owner, tenant))[existing] == "viewer"

    # A link without its token, or with one never issued.
    for broken, expected in (
        ("/accept-invitation", "holds no invitation"),
        ("/accept-invitation#token=pm_inv_never-issued", "cannot be used"),
    ):
        lost = await new_page(browser, invite_api.url)
        await lost.goto(broken)
        await expect(lost.get_by_text(expected)).to_be_visible()
        await lost.context.close()
    for opened in (page, used, second):
        await opened.context.close()
    assert axe == {}, json.dumps(axe, indent=2)


async def test_the_contacts_page_lists_recent_imports_newest_first(
    invite_api: ApiServer, browser: Browser, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> None:
    own = await make_tenant(db_pool, core, "dashimports")
    email = await make_user(db_pool, own, Role.OWNER)
    token = (await sign_in(invite_api, email))["accessToken"]
    files = [("early", b"email\na@example.com\n"), ("late", b"email\nb@example.com\nbroken\n")]
    async with invite_api.client(token) as http:
        for list_name, body in files:
            started = await http.post(
                f"/v1/tenants/{own.name}/contact-imports",
                params={"list": list_name},
                content=body,
                headers={"Content-Type": "text/csv"},
            )
            assert started.status_code == 202, started.text
            job = f"/v1/tenants/{own.name}/contact-imports/{started.json()['id']}"
            for _ in range(600):
                if (await http.get(job)).json()["state"] != "running":
                    break
                await asyncio.sleep(0.2)
    page = await new_page(browser, invite_api.url)
    await sign_in_page(page, email, wait_ms=SLOW)
    await goto(page, "contacts")
    rows = page.get_by_test_id("import-row")
    await expect(rows).to_have_count(len(files))
    await expect(rows.nth(0)).to_contain_text("late")
    await expect(rows.nth(0)).to_contain_text("Imported")
    await expect(rows.nth(1)).to_contain_text("early")
    # The newest import is also the one the import panel shows when the page opens.
    await expect(page.get_by_test_id("import-summary")).to_have_text(
        "1 contacts imported, 1 lines skipped."
    )
    axe: dict[str, list[dict[str, Any]]] = {}
    await check_page(page, "contacts-recent-imports", axe)
    await page.context.close()
    assert axe == {}, json.dumps(axe, indent=2)
