"""`penguinmails contacts import` as a user runs it (its own process, its own credentials file,
standard error on a terminal) against the customer API running as its own process: the file
streamed to the API's import job, a progress bar while it uploads and while the job runs, each
skipped line printed with its line number and field, exit status 2 when lines were skipped and
0 when none were, every good row in the list as the API lists it; a viewer's import refused
with the API's message (exit status 1); `contacts imports ls` listing a tenant's imports
newest first."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.common.db.accounts import Role
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    api_server,
    make_tenant,
    make_user,
    sign_in,
)
from tests.integration.test_api_cli import Cli

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

MASTER_KEY = "cli-contacts-master-key-0123456789abcdef"
ROWS = 3000


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    # Imports hash addresses with the platform's key: without it they answer 503.
    return {"PM_SUPPRESSION_KEY": MASTER_KEY}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(db_pool: asyncpg.Pool, core: client.CoreV1Api) -> TenantSetup:
    return await make_tenant(db_pool, core, "clicontacts")


def on_terminal(cli: Cli, *args: str) -> tuple[int, str, str]:
    """Run the CLI with standard error on a pseudo-terminal (as a person at a shell has it):
    exit status, standard output, and what the terminal showed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    env["XDG_CONFIG_HOME"] = str(cli.config)
    leader, follower = pty.openpty()
    shown: list[bytes] = []

    def read() -> None:  # drained as it comes, or a full terminal buffer would block the CLI
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the CLI closed its end
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    process = subprocess.Popen(
        [sys.executable, "-m", "penguinmails.api.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    out, _ = process.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(leader)
    return process.returncode, out, b"".join(shown).decode(errors="replace")


def csv_file(path: Path, tag: str) -> tuple[list[str], dict[int, str]]:
    """ROWS data rows with a few bad lines: (good addresses, line -> the error's field part)."""
    lines = ["email,first_name"]
    good: list[str] = []
    bad: dict[int, str] = {}
    for n in range(ROWS):
        line = n + 2
        if n % 500 == 7:
            lines.append(f"not-an-address-{n},Bad")
            bad[line] = f"line {line}, email:"
        elif n % 500 == 9:
            lines.append(f"short-{n}-{tag}@example.com")  # one column of two
            bad[line] = f"line {line}:"
        else:
            address = f"c{n}-{tag}@example.com"
            lines.append(f"{address},Name{n}")
            good.append(address)
    path.write_text("\n".join(lines) + "\n")
    return good, bad


async def test_contacts_import_goes_through_the_api_with_progress_and_line_errors(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup, tmp_path: Path
) -> None:
    owner = await make_user(db_pool, tenant, Role.OWNER)
    cli = Cli(api_server, tmp_path / "config")
    cli.login(owner)
    path = tmp_path / "contacts.csv"
    good, bad = csv_file(path, "first")

    status, out, shown = on_terminal(cli, "contacts", "import", "--list", "leads", str(path))
    assert status == 2, (out, shown)
    assert out.strip() == f"imported {len(good)} contacts into leads, skipped {len(bad)}", out
    # The bars: the upload reaching its end, then the import job followed.
    assert "uploading contacts.csv [" + "#" * 30 + "] 100%" in shown, shown
    assert "importing contacts.csv [" in shown, shown
    named = [line for line in shown.splitlines() if line.startswith(f"{path}: ")]
    assert len(named) == len(bad), shown
    for where in bad.values():
        assert any(f"{path}: {where}" in n for n in named), (where, named)

    # What the API holds is what the CLI said.
    token = (await sign_in(api_server, owner))["accessToken"]
    async with api_server.client(token) as http:
        lists = (await http.get(f"/v1/tenants/{tenant.name}/contact-lists")).json()["data"]
        (leads,) = [entry for entry in lists if entry["name"] == "leads"]
        assert leads["contacts"] == len(good)
        jobs = await db_pool.fetch(
            "SELECT state, imported, skipped FROM contact_imports WHERE tenant_id = $1",
            tenant.id,
        )
        assert [(j["state"], j["imported"], j["skipped"]) for j in jobs] == [
            ("succeeded", len(good), len(bad))
        ]

    # A file without bad lines: exit status 0, and -o json prints the job.
    clean = tmp_path / "clean.csv"
    clean.write_text("email,first_name\n" + "".join(f"z{n}@example.com,Z\n" for n in range(50)))
    done = cli.run("contacts", "import", "--list", "more", str(clean), "-o", "json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert '"imported": 50' in done.stdout and '"state": "succeeded"' in done.stdout


async def test_a_viewers_import_is_refused_with_the_apis_message(
    api_server: ApiServer, db_pool: asyncpg.Pool, tenant: TenantSetup, tmp_path: Path
) -> None:
    viewer = await make_user(db_pool, tenant, Role.VIEWER)
    cli = Cli(api_server, tmp_path / "config")
    cli.login(viewer)
    path = tmp_path / "contacts.csv"
    csv_file(path, "viewer")
    done = cli.run("contacts", "import", "--list", "leads", str(path))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stdout == ""


async def test_contacts_imports_ls_shows_the_recent_imports_newest_first(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api, tmp_path: Path
) -> None:
    own = await make_tenant(db_pool, core, "clils")  # its imports are this test's alone
    cli = Cli(api_server, tmp_path / "config")
    cli.login(await make_user(db_pool, own, Role.MEMBER))
    assert cli.json("contacts", "imports", "ls") == []
    imports = [("first", "email\na@example.com\nb@example.com\n"), ("second", "email\nnope\n")]
    for list_name, text in imports:
        path = tmp_path / f"{list_name}.csv"
        path.write_text(text)
        cli.run("contacts", "import", "--list", list_name, str(path))

    listed = cli.json("contacts", "imports", "ls")
    assert [(j["listName"], j["state"], j["imported"], j["skipped"]) for j in listed] == [
        ("second", "succeeded", 0, 1),
        ("first", "succeeded", 2, 0),
    ]
    lines = cli.ok("contacts", "imports", "ls").splitlines()
    assert lines[0].split() == [
        "ID", "LIST", "STATE", "PROGRESS", "ROWS", "IMPORTED", "SKIPPED", "AGE"
    ]  # fmt: skip
    newest = lines[1].split()
    assert newest[:7] == [listed[0]["id"], "second", "succeeded", "100%", "1", "0", "1"]
    assert len(lines) == 1 + len(imports)
    only = cli.ok("contacts", "imports", "ls", "--limit", "1").splitlines()
    assert len(only) == 2 and only[1].split()[0] == listed[0]["id"]
    refused = cli.run("contacts", "imports", "ls", "--limit", "0")
    assert refused.returncode == 2 and "--limit" in refused.stderr
