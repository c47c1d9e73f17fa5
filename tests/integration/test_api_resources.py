"""The tenant's resources through the customer API, written as the same custom resources
kubectl writes: sending domains, SMTP servers and campaigns, with ETag/If-Match, conflicts,
field-naming errors and cursor pages; and a cross-tenant suite (another tenant's ids, keys and
tokens get 404/403 and never data). The API runs as its own process with the chart's RBAC."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from penguinmails.common.db.accounts import Role
from penguinmails.devstack.helm import CHART_DIR
from penguinmails.devstack.stack import api_client_for
from tests.integration.api_stack import (
    ApiServer,
    TenantSetup,
    api_database_url,
    api_key,
    api_kubeconfig,
    api_server,
    make_tenant,
    make_user,
    private_helm,
    sign_in,
)
from tests.integration.conftest import GROUP, VERSION, Cluster
from tests.integration.test_chart import kubectl_dry_run

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

ALL_SCOPES = [f"{r}:write" for r in ("domains", "campaigns", "smtp_servers")]


def domain_spec(fqdn: str) -> dict[str, Any]:
    return {"domain": fqdn, "dnsProvider": {"type": "manual"}}


def server_spec(hostname: str) -> dict[str, Any]:
    return {"provider": {"relay": {"host": "relay.example.com", "port": 587}}, "hostname": hostname}


def campaign_spec(domain: str, fqdn: str, subject: str) -> dict[str, Any]:
    return {
        "sendingDomainRef": {"name": domain},
        "from": {"address": f"hello@{fqdn}", "name": "Hello"},
        "subject": subject,
        "text": "Hello {{ first_name }}",
        "audience": {"lists": ["customers"]},
    }


@dataclass(frozen=True)
class Workspace:
    """A tenant with one object of each kind and credentials of every sort."""

    tenant: TenantSetup
    owner_token: str
    key: str
    key_id: str
    domain: str
    fqdn: str
    server: str
    campaign: str
    subject: str

    @property
    def markers(self) -> list[str]:
        """Strings that appear only in this tenant's data: never in an answer to another."""
        return [self.tenant.namespace, self.fqdn, self.subject, self.key_id, self.key[:14]]


async def make_workspace(
    api: ApiServer, pool: asyncpg.Pool, core: client.CoreV1Api, prefix: str
) -> Workspace:
    tenant = await make_tenant(pool, core, prefix)
    owner = (await sign_in(api, await make_user(pool, tenant, Role.OWNER)))["accessToken"]
    key = await api_key(api, owner, tenant, ALL_SCOPES)
    fqdn, subject = f"{tenant.name}.example.com", f"Subject of {tenant.name}"
    names = {"domain": f"{prefix}-domain", "server": f"{prefix}-relay", "campaign": f"{prefix}-c"}
    base = f"/v1/tenants/{tenant.name}"
    async with api.client(owner) as http:
        keys = (await http.get(f"{base}/api-keys")).json()["data"]
        for path, body in (
            ("sending-domains", {"name": names["domain"], "spec": domain_spec(fqdn)}),
            ("smtp-servers", {"name": names["server"], "spec": server_spec(f"smtp.{fqdn}")}),
            (
                "campaigns",
                {"name": names["campaign"], "spec": campaign_spec(names["domain"], fqdn, subject)},
            ),
        ):
            created = await http.post(f"{base}/{path}", json=body)
            assert created.status_code == 201, created.text
    return Workspace(
        tenant, owner, key, keys[0]["id"], names["domain"], fqdn, names["server"],
        names["campaign"], subject,
    )  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def victim(api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api) -> Workspace:
    return await make_workspace(api_server, db_pool, core, "victim")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def attacker(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> Workspace:
    return await make_workspace(api_server, db_pool, core, "attacker")


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


async def test_sending_domain_lifecycle_etag_and_errors(
    api_server: ApiServer, victim: Workspace, custom_objects: client.CustomObjectsApi
) -> None:
    base = f"/v1/tenants/{victim.tenant.name}/sending-domains"
    async with api_server.client(victim.owner_token) as http:
        shown = await http.get(f"{base}/{victim.domain}")
        assert shown.status_code == 200, shown.text
        body = shown.json()
        assert body["spec"]["domain"] == victim.fqdn
        # It is the custom resource itself, in the tenant's namespace; its ETag names the
        # object and its spec's version.
        stored = custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, victim.tenant.namespace, "sendingdomains", victim.domain
        )
        assert stored["metadata"]["resourceVersion"] == body["resourceVersion"]
        uid, generation = stored["metadata"]["uid"], stored["metadata"]["generation"]
        assert shown.headers["etag"] == f'"{uid}.{generation}"'
        assert stored["spec"]["domain"] == victim.fqdn
        # The records and their verification come from the status the operator writes.
        record = {"name": victim.fqdn, "type": "TXT", "value": "v=spf1 -all", "verified": True}
        custom_objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, victim.tenant.namespace, "sendingdomains", victim.domain,
            {"status": {"records": [record]}},
        )  # fmt: skip
        answer = await http.get(f"{base}/{victim.domain}")
        with_status = answer.json()
        assert with_status["status"]["records"][0]["verified"] is True
        # The operator's status write is not a change of the spec: the ETag stays.
        assert with_status["resourceVersion"] != body["resourceVersion"]
        assert answer.headers["etag"] == shown.headers["etag"]
        assert with_status["status"]["records"][0]["value"] == "v=spf1 -all"

        duplicate = await http.post(
            base, json={"name": victim.domain, "spec": domain_spec(victim.fqdn)}
        )
        assert duplicate.status_code == 409
        assert _error(duplicate)["code"] == "resource_exists"
        missing = await http.post(base, json={"name": "d2", "spec": {"dnsProvider": {}}})
        assert missing.status_code == 400
        assert _error(missing)["param"] == "spec.domain"
        unknown = await http.post(
            base, json={"name": "d2", "spec": {**domain_spec("d2.example.com"), "colour": "red"}}
        )
        assert unknown.status_code == 400
        assert _error(unknown)["param"] == "spec.colour"
        assert _error(unknown)["code"] == "parameter_unknown"
        bad_name = await http.post(
            base, json={"name": "Not_A_Name", "spec": domain_spec("d2.example.com")}
        )
        assert bad_name.status_code == 400 and _error(bad_name)["param"] == "name"

        extra = await http.post(
            base, json={"name": "to-delete", "spec": domain_spec("del.example.com")}
        )
        assert extra.status_code == 201
        stale = await http.delete(f"{base}/to-delete", headers={"If-Match": '"1"'})
        assert stale.status_code == 412, stale.text
        assert _error(stale)["param"] == "If-Match"
        deleted = await http.delete(
            f"{base}/to-delete", headers={"If-Match": extra.headers["etag"]}
        )
        assert deleted.status_code == 204
        assert (await http.get(f"{base}/to-delete")).status_code == 404


async def test_smtp_servers_list_show_create_delete(
    api_server: ApiServer, victim: Workspace
) -> None:
    base = f"/v1/tenants/{victim.tenant.name}/smtp-servers"
    async with api_server.client(victim.key) as http:
        listed = (await http.get(base)).json()
        assert [s["name"] for s in listed["data"]] == [victim.server]
        assert listed["data"][0]["spec"]["provider"]["relay"]["host"] == "relay.example.com"
        two = await http.post(
            base, json={"name": "second", "spec": server_spec(f"smtp2.{victim.fqdn}")}
        )
        assert two.status_code == 201, two.text
        both = (await http.get(base)).json()["data"]
        assert sorted(s["name"] for s in both) == sorted([victim.server, "second"])
        # The CRD's own rule (exactly one provider) comes back naming the field.
        none = await http.post(
            base, json={"name": "third", "spec": {"provider": {}, "hostname": "x.example.com"}}
        )
        assert none.status_code == 400, none.text
        assert (await http.delete(f"{base}/second")).status_code == 204
        assert (await http.get(f"{base}/second")).status_code == 404


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(cluster.kubectl), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_campaign_created_and_paused_through_the_api_equals_kubectl_apply(
    api_server: ApiServer,
    victim: Workspace,
    cluster: Cluster,
    custom_objects: client.CustomObjectsApi,
) -> None:
    namespace = victim.tenant.namespace
    spec = campaign_spec(victim.domain, victim.fqdn, "Same campaign, two ways")
    base = f"/v1/tenants/{victim.tenant.name}/campaigns"
    async with api_server.client(victim.key) as http:
        created = await http.post(base, json={"name": "via-api", "spec": spec})
        assert created.status_code == 201, created.text
        paused = await http.post(
            f"{base}/via-api/pause", headers={"If-Match": created.headers["etag"]}
        )
        assert paused.status_code == 200, paused.text
        assert paused.json()["spec"]["paused"] is True
        assert paused.headers["etag"] != created.headers["etag"]
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Campaign",
        "metadata": {"name": "via-kubectl", "namespace": namespace},
        "spec": {**copy.deepcopy(spec), "paused": True},
    }
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    by_api = custom_objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "campaigns", "via-api"
    )
    by_kubectl = custom_objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "campaigns", "via-kubectl"
    )
    assert by_api["spec"] == by_kubectl["spec"], json.dumps([by_api["spec"], by_kubectl["spec"]])
    assert by_api["metadata"]["namespace"] == by_kubectl["metadata"]["namespace"]
    # And the API shows the kubectl-applied one exactly as its own.
    async with api_server.client(victim.owner_token) as http:
        shown = {
            name: (await http.get(f"{base}/{name}")).json()["spec"]
            for name in ("via-api", "via-kubectl")
        }
        assert shown["via-api"] == shown["via-kubectl"]
        resumed = await http.post(f"{base}/via-kubectl/resume")
        assert resumed.status_code == 200 and resumed.json()["spec"]["paused"] is False
    assert (
        custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "campaigns", "via-kubectl"
        )["spec"]["paused"]
        is False
    )


async def test_campaign_edit_if_match_validation_and_pages(
    api_server: ApiServer, victim: Workspace, custom_objects: client.CustomObjectsApi
) -> None:
    base = f"/v1/tenants/{victim.tenant.name}/campaigns"
    path = f"{base}/{victim.campaign}"
    async with api_server.client(victim.owner_token) as http:
        current = await http.get(path)
        etag = current.headers["etag"]
        # The operator writes the campaign's status (its progress) after the client read it:
        # the edit, based on the spec as it still is, goes through.
        custom_objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, victim.tenant.namespace, "campaigns", victim.campaign,
            {"status": {"progress": 42}},
        )  # fmt: skip
        edited = await http.patch(
            path, json={"spec": {"subject": "New subject"}}, headers={"If-Match": etag}
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["spec"]["subject"] == "New subject"
        assert edited.json()["spec"]["text"] == "Hello {{ first_name }}"  # the rest kept
        # The old ETag no longer matches: 412, and nothing changed.
        stale = await http.patch(
            path, json={"spec": {"subject": "Lost update"}}, headers={"If-Match": etag}
        )
        assert stale.status_code == 412, stale.text
        assert (await http.get(path)).json()["spec"]["subject"] == "New subject"
        invalid = await http.patch(path, json={"spec": {"subject": ""}})
        assert invalid.status_code == 400
        assert _error(invalid)["param"] == "spec.subject"
        # Unsetting both bodies breaks the spec's own rule; the error says how to fix it.
        no_body = await http.patch(path, json={"spec": {"text": None}})
        assert no_body.status_code == 400 and "spec.text" in _error(no_body)["message"]
        # Immutable in the CRD (a CEL rule): the API server refuses, the API names the field.
        moved = await http.patch(path, json={"spec": {"sendingDomainRef": {"name": "other"}}})
        assert moved.status_code == 400, moved.text
        assert "sendingDomainRef" in (_error(moved)["param"] or "")

        for index in range(3):
            spec = campaign_spec(victim.domain, victim.fqdn, f"Page {index}")
            assert (
                await http.post(base, json={"name": f"page-{index}", "spec": spec})
            ).status_code == 201
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await http.get(base, params=params)).json()
            pages += 1
            assert len(page["data"]) <= 2
            seen += [c["name"] for c in page["data"]]
            if not page["hasMore"]:
                assert "nextCursor" not in page
                break
            cursor = page["nextCursor"]
        everything = (await http.get(base, params={"limit": 100})).json()["data"]
        assert seen == [c["name"] for c in everything]
        assert len(seen) == len(set(seen)) and pages == (len(seen) + 1) // 2
        bad = await http.get(base, params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400 and _error(bad)["param"] == "cursor"
        too_many = await http.get(base, params={"limit": 1000})
        assert too_many.status_code == 400 and _error(too_many)["param"] == "limit"


def probes(target: Workspace, tenant: str) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """Every endpoint, aimed at `tenant` with `target`'s object names and ids."""
    base = f"/v1/tenants/{tenant}"
    domain = {"name": "probe-domain", "spec": domain_spec("probe.example.com")}
    server = {"name": "probe-relay", "spec": server_spec("smtp.probe.example.com")}
    campaign = {"name": "probe-c", "spec": campaign_spec(target.domain, target.fqdn, "probe")}
    own_tenant_only = [
        ("GET", f"{base}/sending-domains", None),
        ("POST", f"{base}/sending-domains", domain),
        ("GET", f"{base}/smtp-servers", None),
        ("POST", f"{base}/smtp-servers", server),
        ("GET", f"{base}/campaigns", None),
        ("POST", f"{base}/campaigns", campaign),
        ("GET", f"{base}/api-keys", None),
        ("POST", f"{base}/api-keys", {"name": "probe", "scopes": ["domains:read"]}),
    ]
    by_id = [
        ("GET", f"{base}/sending-domains/{target.domain}", None),
        ("DELETE", f"{base}/sending-domains/{target.domain}", None),
        ("GET", f"{base}/smtp-servers/{target.server}", None),
        ("DELETE", f"{base}/smtp-servers/{target.server}", None),
        ("GET", f"{base}/campaigns/{target.campaign}", None),
        ("PATCH", f"{base}/campaigns/{target.campaign}", {"spec": {"subject": "pwned"}}),
        ("POST", f"{base}/campaigns/{target.campaign}/pause", None),
        ("POST", f"{base}/campaigns/{target.campaign}/resume", None),
        ("DELETE", f"{base}/campaigns/{target.campaign}", None),
        ("DELETE", f"{base}/api-keys/{target.key_id}", None),
    ]
    yield from by_id
    if tenant == target.tenant.name:
        yield from own_tenant_only


async def test_another_tenants_credentials_get_nothing(
    api_server: ApiServer,
    db_pool: asyncpg.Pool,
    victim: Workspace,
    attacker: Workspace,
    custom_objects: client.CustomObjectsApi,
) -> None:
    outsider = (await sign_in(api_server, await make_user(db_pool, None, Role.OWNER)))[
        "accessToken"
    ]
    attacker_viewer = (
        await sign_in(api_server, await make_user(db_pool, attacker.tenant, Role.VIEWER))
    )["accessToken"]
    credentials = {
        "attacker owner token": attacker.owner_token,
        "attacker API key": attacker.key,
        "attacker viewer token": attacker_viewer,
        "token of a user in no tenant": outsider,
    }
    counts: dict[int, int] = {}
    total = 0
    for who, credential in credentials.items():
        # The victim's tenant with the victim's ids, and the attacker's own tenant with the
        # victim's ids (names that exist only in the victim's namespace).
        for tenant in (victim.tenant.name, attacker.tenant.name):
            for method, path, body in probes(victim, tenant):
                async with api_server.client(credential) as http:
                    response = await http.request(method, path, json=body)
                total += 1
                counts[response.status_code] = counts.get(response.status_code, 0) + 1
                assert response.status_code in (403, 404), (who, method, path, response.text)
                for marker in victim.markers:
                    assert marker not in response.text, (who, method, path, marker)
    # The victim's credentials against the attacker's tenant, with the attacker's ids.
    for credential in (victim.owner_token, victim.key):
        for method, path, body in probes(attacker, attacker.tenant.name):
            async with api_server.client(credential) as http:
                response = await http.request(method, path, json=body)
            total += 1
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
            assert response.status_code in (403, 404), (method, path, response.text)
            for marker in attacker.markers:
                assert marker not in response.text, (method, path, marker)
    print(f"\ncross-tenant probes: {total}, by status: {dict(sorted(counts.items()))}")
    assert total >= 100
    # Nothing of the victim's changed, and its credentials still work.
    async with api_server.client(victim.key) as http:
        campaign = await http.get(f"/v1/tenants/{victim.tenant.name}/campaigns/{victim.campaign}")
        assert campaign.status_code == 200
        assert campaign.json()["spec"]["subject"] != "pwned"
    names = {
        plural: sorted(
            o["metadata"]["name"]
            for o in custom_objects.list_namespaced_custom_object(
                GROUP, VERSION, victim.tenant.namespace, plural
            )["items"]
        )
        for plural in ("sendingdomains", "smtpservers", "campaigns")
    }
    assert (
        victim.domain in names["sendingdomains"] and "probe-domain" not in names["sendingdomains"]
    )
    assert victim.server in names["smtpservers"] and "probe-relay" not in names["smtpservers"]
    assert victim.campaign in names["campaigns"] and "probe-c" not in names["campaigns"]
    async with api_server.client(victim.owner_token) as http:
        keys = (await http.get(f"/v1/tenants/{victim.tenant.name}/api-keys")).json()["data"]
        assert all(k["revokedAt"] is None for k in keys)
        assert len(keys) == 1


def test_the_api_identity_reaches_its_three_kinds_and_nothing_else(
    api_kubeconfig: Path, victim: Workspace
) -> None:
    """The chart's RBAC for the API, used as the API uses it: its kinds yes, the rest no."""
    with api_client_for(api_kubeconfig) as api:
        objects = client.CustomObjectsApi(api)
        namespace = victim.tenant.namespace
        for plural in ("sendingdomains", "campaigns", "smtpservers"):
            assert objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        refused: list[tuple[str, Callable[[], Any]]] = [
            ("secrets", lambda: client.CoreV1Api(api).list_namespaced_secret(namespace)),
            ("namespaces", lambda: client.CoreV1Api(api).list_namespace()),
            # Tenants: get, list and patch (platform administrators, billing), never delete.
            (
                "tenant deletion",
                lambda: objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", "any"),
            ),
            (
                "campaign status",
                lambda: objects.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    "campaigns",
                    victim.campaign,
                    {"status": {"phase": "Completed"}},
                ),
            ),
        ]
        for what, call in refused:
            with pytest.raises(ApiException) as caught:
                call()
            assert caught.value.status == 403, what


def test_chart_lints_with_the_api_and_refuses_it_without_its_secret(
    tmp_path: Path, cluster: Cluster
) -> None:
    helm = private_helm(tmp_path)
    enabled = ("--set", "api.enabled=true", "--set", "api.secretName=penguinmails-api")
    lint = helm.run("lint", "--strict", str(CHART_DIR), *enabled)
    assert "0 chart(s) failed" in lint.stdout, lint.stdout
    documents = helm.template("pm", "default", sets=(enabled[1], enabled[3]))
    api_documents = [
        d for d in documents if d["metadata"]["labels"].get("app.kubernetes.io/component") == "api"
    ]
    assert sorted(d["kind"] for d in api_documents) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount",
    ]  # fmt: skip
    # The API server accepts them as rendered (a server-side dry run: nothing is created).
    output = kubectl_dry_run(cluster, api_documents)
    assert output.count("serverside-applied (server dry run)") == len(api_documents), output
    (deployment,) = [
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api")
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["penguinmails-api"]
    # Every setting that carries a secret comes from the Secret, never a value; the only plain
    # values are the egress policy webhook URLs are checked against, the import size limit,
    # the invitation e-mail's sender and link, and the proxies whose X-Forwarded-For is believed.
    env = {e["name"]: e for e in container["env"]}
    assert {n for n, e in env.items() if "value" in e} == {
        "PM_CLUSTER_CIDRS",
        "PM_EGRESS_ALLOW",
        "PM_API_IMPORT_MAX_BYTES",
        "PM_API_INVITATION_FROM",
        "PM_API_INVITATION_URL",
        "PM_API_TRUSTED_PROXIES",
    }
    assert env["PM_API_TRUSTED_PROXIES"]["value"] == ""  # none by default
    assert {
        n: e["valueFrom"]["secretKeyRef"]["name"] for n, e in env.items() if "value" not in e
    } == {
        "PM_API_DATABASE_URL": "penguinmails-api",
        "PM_REDIS_URL": "penguinmails-api",
        "PM_API_SIGNING_KEYS": "penguinmails-api",
        "PM_SUPPRESSION_KEY": "penguinmails-api",
    }
    missing = helm.run("template", "pm", str(CHART_DIR), "--set", "api.enabled=true", check=False)
    assert missing.returncode != 0
    assert "api.secretName is required" in missing.stderr


async def test_idempotency_key_replays_the_first_answer(
    api_server: ApiServer, victim: Workspace, attacker: Workspace
) -> None:
    base = f"/v1/tenants/{victim.tenant.name}/sending-domains"
    body = {"name": "once", "spec": domain_spec("once.example.com")}
    headers = {"Idempotency-Key": "create-once-1"}
    async with api_server.client(victim.key) as http:
        first = await http.post(base, json=body, headers=headers)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        again = await http.post(base, json=body, headers=headers)
        # Without the key the retry would be a 409: the name exists now.
        assert again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert again.headers["etag"] == first.headers["etag"]
        other = await http.post(
            base, json={**body, "name": "twice"}, headers={"Idempotency-Key": "create-once-1"}
        )
        assert other.status_code == 400
        assert _error(other)["code"] == "idempotency_key_reused"
        assert _error(other)["param"] == "Idempotency-Key"
        plain = await http.post(base, json=body)
        assert plain.status_code == 409  # no key: a second create of the same name conflicts
        listed = (await http.get(base, params={"limit": 100})).json()["data"]
        assert [d["name"] for d in listed].count("once") == 1
    # Keys are the caller's own: another caller's same key is another request.
    async with api_server.client(attacker.key) as http:
        theirs = await http.post(
            f"/v1/tenants/{attacker.tenant.name}/sending-domains", json=body, headers=headers
        )
        assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
