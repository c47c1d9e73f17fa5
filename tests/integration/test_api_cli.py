"""The `penguinmails` CLI as a user runs it (its own process, its own credentials file) against
the customer API running as its own process with the chart's RBAC (api_stack.py): login, sending
domains, campaigns from a manifest, pause and resume, API keys shown once and revoked, logout;
the API's error message and field for a bad field; the credentials file's mode; an expired
access token refreshed without asking for anything, also by several processes at once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import pytest_asyncio
import yaml
from kubernetes import client

from penguinmails.api.http.tokens import SigningKeyRing
from penguinmails.common.db.accounts import Role
from tests.integration.api_stack import (
    PASSWORD,
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    api_server,
    make_tenant,
    make_user,
)
from tests.integration.conftest import GROUP, VERSION

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name


@dataclass(frozen=True)
class Cli:
    """The CLI with its own configuration directory (XDG_CONFIG_HOME)."""

    api: ApiServer
    config: Path

    @property
    def credentials(self) -> Path:
        return self.config / "penguinmails" / "credentials"

    def stored(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.credentials.read_text())
        return body

    def start(self, *args: str, stdin: str | None = None) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
        env["XDG_CONFIG_HOME"] = str(self.config)
        return subprocess.Popen(
            [sys.executable, "-m", "penguinmails.api.cli", *args],
            env=env,
            # Nothing to read unless given: a prompt would fail rather than wait.
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        process = self.start(*args, stdin=stdin)
        out, err = process.communicate(stdin, timeout=180)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    def login(self, email: str) -> str:
        return self.ok(
            "login", "--api-url", self.api.url, "--email", email, "--password-stdin",
            stdin=PASSWORD + "\n",
        )  # fmt: skip


@dataclass(frozen=True)
class Account:
    tenant: TenantSetup
    email: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def account(db_pool: asyncpg.Pool, core: client.CoreV1Api) -> Account:
    tenant = await make_tenant(db_pool, core, "cli")
    return Account(tenant, await make_user(db_pool, tenant, Role.OWNER))


@pytest.fixture
def cli(api_server: ApiServer, tmp_path: Path) -> Iterator[Cli]:
    yield Cli(api_server, tmp_path / "config")


def campaign_manifest(name: str, domain: str, fqdn: str, **extra: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Campaign",
            "metadata": {"name": name},
            "spec": {
                "sendingDomainRef": {"name": domain},
                "from": {"address": f"hello@{fqdn}", "name": "Hello"},
                "subject": "Hello {{ first_name }}",
                "text": "Hello {{ first_name }}",
                "audience": {"lists": ["customers"]},
                **extra,
            },
        }
    )


def rows(table: str) -> list[dict[str, str]]:
    """A printed table's rows by column heading (columns start where the headings do)."""
    header, *lines = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines
    ]


def test_login_domains_campaigns_keys_logout(
    cli: Cli, account: Account, custom_objects: client.CustomObjectsApi, tmp_path: Path
) -> None:
    tenant = account.tenant
    said = cli.login(account.email)
    assert f"tenant {tenant.name}" in said  # the only tenant of the user is chosen
    mode = stat.S_IMODE(cli.credentials.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert stat.S_IMODE(cli.credentials.parent.stat().st_mode) == 0o700
    stored = cli.stored()
    assert stored["refresh_token"].startswith("pm_rt_") and stored["tenant"] == tenant.name

    fqdn = f"{tenant.name}.example.com"
    assert "created" in cli.ok("domains", "create", "cli-domain", "--domain", fqdn)
    (row,) = rows(cli.ok("domains", "ls"))
    assert (row["NAME"], row["DOMAIN"], row["DNS"]) == ("cli-domain", fqdn, "manual")
    listed = cli.json("domains", "ls")
    assert [(d["name"], d["spec"]["domain"]) for d in listed] == [("cli-domain", fqdn)]
    assert (
        cli.json("domains", "show", "cli-domain")["resourceVersion"]
        == (
            custom_objects.get_namespaced_custom_object(
                GROUP, VERSION, tenant.namespace, "sendingdomains", "cli-domain"
            )["metadata"]["resourceVersion"]
        )
    )

    # A full manifest on standard input, as kubectl would take it.
    second = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SendingDomain",
        "metadata": {"name": "cli-second", "namespace": "ignored"},
        "spec": {"domain": f"second.{fqdn}", "dnsProvider": {"type": "manual"}},
    }
    cli.ok("domains", "create", "-f", "-", stdin=yaml.safe_dump(second))
    assert sorted(d["name"] for d in cli.json("domains", "ls")) == ["cli-domain", "cli-second"]
    cli.ok("domains", "delete", "cli-second")

    # SMTP servers (created through the API itself: the CLI lists and shows them).
    with httpx.Client(base_url=cli.api.url) as http:
        made_server = http.post(
            f"/v1/tenants/{tenant.name}/smtp-servers",
            json={
                "name": "cli-relay",
                "spec": {
                    "provider": {"relay": {"host": "relay.example.com", "port": 587}},
                    "hostname": f"smtp.{fqdn}",
                },
            },
            headers={"Authorization": f"Bearer {cli.stored()['access_token']}"},
        )
        assert made_server.status_code == 201, made_server.text
    (row,) = rows(cli.ok("servers", "ls"))
    assert (row["NAME"], row["HOSTNAME"], row["PROVIDER"]) == ("cli-relay", f"smtp.{fqdn}", "relay")
    assert f"hostname: smtp.{fqdn}" in " ".join(cli.ok("servers", "show", "cli-relay").split())
    assert cli.json("servers", "show", "cli-relay")["spec"]["hostname"] == f"smtp.{fqdn}"

    manifest = tmp_path / "campaign.yaml"
    manifest.write_text(campaign_manifest("cli-c", "cli-domain", fqdn))
    assert "campaign cli-c created" in cli.ok("campaigns", "create", "-f", str(manifest))

    def paused() -> Any:
        return custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, tenant.namespace, "campaigns", "cli-c"
        )["spec"].get("paused")

    assert paused() in (None, False)
    cli.ok("campaigns", "pause", "cli-c")
    assert paused() is True
    assert cli.json("campaigns", "show", "cli-c")["spec"]["paused"] is True
    (row,) = rows(cli.ok("campaigns", "ls"))
    assert (row["NAME"], row["DOMAIN"], row["PAUSED"]) == ("cli-c", "cli-domain", "yes")
    cli.ok("campaigns", "resume", "cli-c")
    assert paused() is False
    assert cli.json("campaigns", "ls")[0]["spec"]["paused"] is False

    # A key: printed once, by create alone; never by a listing.
    made = cli.run("keys", "create", "ci", "--scope", "domains:read")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("pm_live_") and made.stdout == key + "\n"
    assert "shown this once" in made.stderr and key not in made.stderr
    listing, listing_json = cli.ok("keys", "ls"), cli.json("keys", "ls")
    assert key not in listing and key not in json.dumps(listing_json)
    (entry,) = [k for k in listing_json if k["name"] == "ci"]
    assert key.startswith(entry["prefix"]) and entry["id"] in listing

    # Signed in with the key (another configuration): its scope, and the API's refusals.
    as_key = Cli(cli.api, tmp_path / "key-config")
    as_key.ok(
        "login", "--api-url", cli.api.url, "--api-key", "-", "--tenant", tenant.name,
        stdin=key + "\n",
    )  # fmt: skip
    assert [d["name"] for d in as_key.json("domains", "ls")] == ["cli-domain"]
    refused = as_key.run("campaigns", "ls")
    assert refused.returncode == 1 and "campaigns:read" in refused.stderr, refused.stderr

    cli.ok("keys", "revoke", entry["id"])
    assert [k["revokedAt"] for k in cli.json("keys", "ls") if k["id"] == entry["id"]] != [None]
    revoked = as_key.run("domains", "ls")
    assert revoked.returncode == 1 and "revoked" in revoked.stderr, revoked.stderr

    # The audit log has the writes, newest first, filtered by an action prefix.
    actions = [e["action"] for e in cli.json("audit", "ls", "--action", "campaign.*")]
    assert actions == ["campaign.resume", "campaign.pause", "campaign.create"]
    audit_rows = rows(cli.ok("audit", "ls"))
    assert {"sending_domain.create", "api_key.create", "api_key.delete"} <= {
        r["ACTION"] for r in audit_rows
    }

    cli.ok("campaigns", "delete", "cli-c")
    cli.ok("domains", "delete", "cli-domain")
    assert cli.json("campaigns", "ls") == [] and cli.json("domains", "ls") == []

    tokens = cli.stored()
    assert "signed out" in cli.ok("logout")
    assert not cli.credentials.exists()
    with httpx.Client(base_url=cli.api.url) as http:
        reused = http.post("/v1/auth/refresh", json={"refreshToken": tokens["refresh_token"]})
        assert reused.status_code == 401
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 401
    after = cli.run("domains", "ls")
    assert after.returncode == 1 and "not signed in" in after.stderr


def test_a_bad_field_prints_the_apis_message_and_field(
    cli: Cli, account: Account, tmp_path: Path
) -> None:
    cli.login(account.email)
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(campaign_manifest("bad", "nowhere", "example.com", colour="red"))
    done = cli.run("campaigns", "create", "-f", str(manifest))
    assert done.returncode == 1 and done.stdout == ""
    # Exactly what the API answers the same body.
    body = yaml.safe_load(manifest.read_text())
    with httpx.Client(base_url=cli.api.url) as http:
        answer = http.post(
            f"/v1/tenants/{account.tenant.name}/campaigns",
            json={"name": "bad", "spec": body["spec"]},
            headers={"Authorization": f"Bearer {cli.stored()['access_token']}"},
        )
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["param"] == "spec.colour"
    assert done.stderr == f"error: {error['message']} (param: spec.colour)\n"
    assert cli.json("campaigns", "ls") == []


def test_lists_follow_every_page(cli: Cli, account: Account) -> None:
    """More keys than one page holds (100): `keys ls` shows all of them."""
    cli.login(account.email)
    token = cli.stored()["access_token"]
    path = f"/v1/tenants/{account.tenant.name}/api-keys"

    async def make(count: int) -> None:
        async with httpx.AsyncClient(
            base_url=cli.api.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as http:
            for start in range(0, count, 10):
                answers = await asyncio.gather(
                    *(
                        http.post(path, json={"name": f"page-{i}", "scopes": ["domains:read"]})
                        for i in range(start, min(start + 10, count))
                    )
                )
                assert all(a.status_code == 201 for a in answers)

    asyncio.run(make(105))
    with httpx.Client(base_url=cli.api.url, headers={"Authorization": f"Bearer {token}"}) as http:
        first = http.get(path, params={"limit": 100}).json()
    assert first["hasMore"] is True  # so the listing below needed a second page
    listed = cli.json("keys", "ls")
    assert len({k["id"] for k in listed}) == len(listed)
    assert {f"page-{i}" for i in range(105)} <= {k["name"] for k in listed}
    assert len(rows(cli.ok("keys", "ls"))) == len(listed)


def _expired_token(api: ApiServer, access_token: str) -> str:
    """The same sign-in's access token, signed by the API's own key, expired a while ago."""
    claims = jwt.decode(access_token, options={"verify_signature": False})
    ring = SigningKeyRing.parse(api.signing_keys)
    return ring.issue(uuid.UUID(claims["sub"]), uuid.UUID(claims["fam"]), timedelta(minutes=-5))


def test_an_expired_access_token_is_refreshed_without_asking(cli: Cli, account: Account) -> None:
    cli.login(account.email)
    before = cli.stored()
    expired = _expired_token(cli.api, before["access_token"])
    with httpx.Client(base_url=cli.api.url) as http:
        assert http.get("/v1/me", headers={"Authorization": f"Bearer {expired}"}).status_code == 401

    def store(token: str, expires_at: float) -> None:
        cli.credentials.write_text(
            json.dumps({**cli.stored(), "access_token": token, "expires_at": expires_at})
        )

    # The file knows it has expired: refreshed before the request (stdin is /dev/null).
    store(expired, time.time() - 300)
    assert cli.json("domains", "ls") == []
    renewed = cli.stored()
    assert renewed["refresh_token"] != before["refresh_token"]
    assert renewed["access_token"] != expired and renewed["expires_at"] > time.time()
    assert stat.S_IMODE(cli.credentials.stat().st_mode) == 0o600

    # The file believes it valid (another clock): the API's 401 gets it refreshed.
    store(expired, time.time() + 600)
    assert cli.json("domains", "ls") == []
    assert cli.stored()["refresh_token"] != renewed["refresh_token"]

    # Several commands at once with one expired token: one refreshes, the others use its
    # tokens; had two presented the same refresh token, the API would revoke the sign-in.
    store(expired, time.time() - 300)
    processes = [cli.start("domains", "ls", "-o", "json") for _ in range(4)]
    results = [(p.communicate(timeout=180), p.returncode) for p in processes]
    assert [code for _, code in results] == [0] * 4, results
    final = cli.stored()
    with httpx.Client(base_url=cli.api.url) as http:
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {final['access_token']}"})
    assert me.status_code == 200, me.text
