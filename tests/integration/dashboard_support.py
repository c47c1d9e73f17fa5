"""What every dashboard test shares: the built dashboard served by the API as its own process,
the operator resolving through a private Knot server, Debian's Chromium driven by Playwright,
and the checks every page gets (a screenshot kept under build/test-artifacts/dashboard/ and
axe-core's serious or critical violations).

A test module uses the fixtures by name: `from tests.integration.dashboard_support import ...`
and lists them in `__all__`, as with api_stack's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from penguinmails.devstack.dnszones import minimal_zone
from penguinmails.devstack.knot import KnotServer
from tests.integration.api_stack import PASSWORD, ApiServer, start_api, stop_api
from tests.integration.conftest import OperatorFactory, OperatorProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
DIST = REPO_ROOT / "web" / "dist"
AXE = REPO_ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO_ROOT / "build" / "test-artifacts" / "dashboard"
ZONE = "dashboard.test"
SUPPRESSION_KEY = "dashboard-master-key-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
# As root on a closed network: no sandbox, and none of Chromium's own background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {"overview": "Overview", "domains": "Sending domains", "campaigns": "Campaigns",
         "campaigns/new": "New campaign",
         "api-keys": "API keys",
         "contacts": "Contacts", "servers": "SMTP servers", "audit-log": "Audit log",
         "settings/members": "Members", "settings/webhooks": "Webhooks",
         "settings/billing": "Billing", "settings/security": "Security"}  # fmt: skip


RESTORE_SESSION = (
    "s => Object.entries(JSON.parse(s)).forEach(([k, v]) => sessionStorage.setItem(k, v))"
)
"""The tab's sign-in (and tenant last shown) copied into another tab, as a reload keeps them."""


class Phases:
    """Prints how long each phase of the test took (never asserted: the machine is shared)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        print(f"phase {name}: {now - self.last:.1f}s")
        self.last = now


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    with KnotServer(tmp_path_factory.mktemp("knot"), {ZONE: minimal_zone(ZONE)}) as server:
        yield server


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, knot: KnotServer) -> Iterator[OperatorProcess]:
    """The operator, resolving through the private Knot (it computes and verifies records)."""
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS="2",
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()


@pytest.fixture(scope="module")
def dashboard_api(
    operator: OperatorProcess,  # first: torn down last, after the tenant namespaces are gone
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    assert (DIST / "index.html").is_file(), "the dashboard is not built: run `make web`"
    process, server = start_api(
        tmp_path_factory.mktemp("api"),
        database_url=api_database_url,
        redis_url=redis_url,
        kubeconfig=api_kubeconfig,
        PM_DASHBOARD_DIR=str(DIST),
        PM_SUPPRESSION_KEY=SUPPRESSION_KEY,  # contacts, imports and suppression need it
    )
    yield server
    stop_api(process)
    assert "Traceback" not in server.log(), server.log()[-4000:]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        found = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield found
        await found.close()


async def new_page(browser: Browser, base_url: str, width: int = 1280) -> Page:
    context = await browser.new_context(base_url=base_url, viewport={"width": width, "height": 900})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    page = await context.new_page()
    page.set_default_timeout(30_000)
    return page


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def check_page(page: Page, name: str, found: dict[str, list[dict[str, Any]]]) -> None:
    """Screenshot the page and collect axe-core's findings on it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    violations = await serious_violations(page)
    if violations:
        found[name] = violations


async def sign_in_page(page: Page, email: str, wait_ms: float | None = None) -> None:
    """Sign in through the page, as a user does, until the overview shows (within `wait_ms`,
    Playwright's default when None)."""
    await page.goto("/")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible(
        timeout=wait_ms
    )


async def goto(page: Page, route: str) -> None:
    await page.goto(f"/#/{route}")
    await expect(page.get_by_role("heading", level=1, name=PAGES[route])).to_be_visible()
