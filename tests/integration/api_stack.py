"""The customer API as it runs in production, for the tests/integration/test_api_*.py modules.

- its Kubernetes identity is the chart's own ServiceAccount (rendered by helm, RBAC applied,
  a token requested for it): the tests exercise exactly the rights the chart grants;
- its PostgreSQL login is a fresh LOGIN role, a member of penguinmails_api, penguinmails_app and
  penguinmails_platform only (tenant work under row-level security; no
  superuser, no ownership);
- it runs as its own process (`python -m penguinmails.api.http`, uvicorn) on a free loopback
  port, with Redis for the sign-in throttle.

Tenants are set up as the operator leaves them (their row in `tenants`, their namespace).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.api.http.tokens import new_signing_key
from penguinmails.common.db import accounts
from penguinmails.common.db.accounts import Role
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.devstack.api import ApiProcess, api_login
from penguinmails.devstack.controlplane import write_kubeconfig
from penguinmails.devstack.helm import build_helm
from penguinmails.devstack.stack import apply_documents
from penguinmails.operator import tenant_resources as res
from tests.integration.conftest import Cluster
from tests.integration.test_chart import Helm

RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
PASSWORD = "correct horse battery staple"
OPERATIONS = 77
"""How many operations the OpenAPI document has: the fuzzers check they reached every one."""


@dataclass(frozen=True)
class ApiServer:
    url: str
    log_path: Path
    signing_keys: str

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True)
class TenantSetup:
    name: str
    id: uuid.UUID
    namespace: str


def private_helm(private: Path) -> Helm:
    return Helm(build_helm(), {"HELM_CACHE_HOME": str(private / "cache"), "PATH": "/usr/bin"})


@pytest.fixture(scope="module")
def api_kubeconfig(
    cluster: Cluster, api_client: client.ApiClient, core: client.CoreV1Api, crds_installed: Any
) -> Iterator[Path]:
    """A kubeconfig for the chart's API ServiceAccount, with exactly the chart's RBAC.

    The module's tenant namespaces (make_tenant) go with it: the tenants were never Tenant
    resources, so an operator started by a later module must not find their objects."""
    with chart_api_identity(cluster, api_client, core) as kubeconfig:
        yield kubeconfig
    made = list(_TENANT_NAMESPACES)
    _TENANT_NAMESPACES.clear()
    for namespace in made:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(namespace)
    # Gone before the next module starts an operator: one that found them still terminating
    # would put its finalizer on their objects and keep them (and their namespace) forever.
    deadline = time.monotonic() + 120
    while made and time.monotonic() < deadline:
        names = {n.metadata.name for n in core.list_namespace().items}
        made = [namespace for namespace in made if namespace in names]
        time.sleep(0.5)


@contextmanager
def chart_api_identity(
    cluster: Cluster, api_client: client.ApiClient, core: client.CoreV1Api, *sets: str
) -> Iterator[Path]:
    """The API ServiceAccount and RBAC the chart renders with `sets` (e.g. billing on)."""
    private = Path(tempfile.mkdtemp(prefix="penguinmails-api-"))
    release, namespace = f"pm-api-{secrets.token_hex(3)}", f"pm-api-rel-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    helm = private_helm(private)
    rendered = helm.template(
        release, namespace, sets=("api.enabled=true", "api.secretName=penguinmails-api", *sets)
    )
    documents = [
        d
        for d in rendered
        if d["kind"] in RBAC_KINDS
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == "api"
    ]
    assert {d["kind"] for d in documents} == RBAC_KINDS
    apply_documents(api_client, documents)
    (account,) = [d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"]
    token = core.create_namespaced_service_account_token(
        account, namespace, client.AuthenticationV1TokenRequest(spec={"audiences": []})
    ).status.token
    kubeconfig = private / "api.kubeconfig"
    write_kubeconfig(kubeconfig, cluster.server, str(token), cluster.ca_file)
    yield kubeconfig
    rbac = client.RbacAuthorizationV1Api(api_client)
    for document in documents:
        if document["kind"] == "ClusterRoleBinding":
            rbac.delete_cluster_role_binding(document["metadata"]["name"])
        elif document["kind"] == "ClusterRole":
            rbac.delete_cluster_role(document["metadata"]["name"])
    core.delete_namespace(namespace)
    shutil.rmtree(private, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api_database_url(postgres_dsn: str) -> str:
    """The API's own login (`api_login()`), as the chart's Secret would name."""
    return await api_login(postgres_dsn)


def start_api(
    tmp: Path, *, database_url: str, redis_url: str, kubeconfig: Path, **extra_env: str
) -> tuple[ApiProcess, ApiServer]:
    keys = new_signing_key("test-1")
    process = ApiProcess(
        tmp,
        {
            "PM_API_DATABASE_URL": database_url,
            "PM_REDIS_URL": redis_url,
            "PM_API_SIGNING_KEYS": keys,
            "PM_KUBECONFIG": str(kubeconfig),
            **extra_env,
        },
    ).start()
    return process, ApiServer(process.url, process.log_path, keys)


def stop_api(process: ApiProcess) -> None:
    process.stop(timeout=20)


@pytest.fixture(scope="module")
def api_server(
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    api_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """The module's API process; its log is checked for tracebacks and for every value of
    api_env that looks like a secret (a key ring or a key must never be logged)."""
    process, server = start_api(
        tmp_path_factory.mktemp("api"),
        database_url=api_database_url,
        redis_url=redis_url,
        kubeconfig=api_kubeconfig,
        **api_env,
    )
    yield server
    stop_api(process)
    text = server.log()
    assert "Traceback" not in text, text[-4000:]
    for name, value in api_env.items():
        if name.endswith(("_KEY", "_KEYS", "_SECRET")):
            assert value not in text, f"{name} appears in the API's log"


def own_redis_database(redis_url: str, database: int) -> str:
    """The stack's Redis with another database number, so a module's failed sign-ins do not
    throttle the other modules' (the throttle keys by source address, and all are loopback)."""
    base, _, _ = redis_url.rpartition("/")
    return f"{base}/{database}"


@dataclass(frozen=True)
class TenantAccess:
    """A tenant with an owner and a viewer signed in, and API keys with the scopes asked for."""

    setup: TenantSetup
    owner: str
    owner_id: str
    viewer: str
    keys: list[str]
    key_ids: list[str]

    @property
    def base(self) -> str:
        return f"/v1/tenants/{self.setup.name}"


async def tenant_access(
    api: ApiServer,
    pool: asyncpg.Pool,
    core: client.CoreV1Api,
    prefix: str,
    key_scopes: list[list[str]],
) -> TenantAccess:
    setup = await make_tenant(pool, core, prefix)
    owner = (await sign_in(api, await make_user(pool, setup, Role.OWNER)))["accessToken"]
    viewer = (await sign_in(api, await make_user(pool, setup, Role.VIEWER)))["accessToken"]
    created = [await new_api_key(api, owner, setup, scopes) for scopes in key_scopes]
    async with api.client(owner) as http:
        me = (await http.get("/v1/me")).json()
    return TenantAccess(
        setup,
        owner,
        me["id"],
        viewer,
        [key["key"] for key in created],
        [key["id"] for key in created],
    )


_TENANT_NAMESPACES: list[str] = []
"""Namespaces make_tenant created in this module, deleted with api_kubeconfig."""


async def make_tenant(
    pool: asyncpg.Pool, core: client.CoreV1Api, prefix: str, tier: str = "starter"
) -> TenantSetup:
    """A tenant as the operator leaves it: its row and its namespace."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    namespace = res.namespace_for(name)
    core.create_namespace({"metadata": {"name": namespace}})
    _TENANT_NAMESPACES.append(namespace)
    tenant_id = await upsert_tenant(
        pool,
        name=name,
        tier=tier,
        namespace=namespace,
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )
    return TenantSetup(name, tenant_id, namespace)


async def make_user(pool: asyncpg.Pool, tenant: TenantSetup | None, role: Role) -> str:
    """A user (member of `tenant` with `role`); returns the e-mail address."""
    email = f"user-{secrets.token_hex(4)}@example.com"
    user_id = await accounts.create_user(pool, email, PASSWORD)
    if tenant is not None:
        await accounts.add_membership(pool, tenant.id, user_id, role)
    return email


async def sign_in(api: ApiServer, email: str, password: str = PASSWORD) -> dict[str, Any]:
    async with api.client() as http:
        response = await http.post("/v1/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def new_api_key(
    api: ApiServer, admin_token: str, tenant: TenantSetup, scopes: list[str]
) -> dict[str, Any]:
    """The API's answer to creating a key: the key itself (shown this once) and its id."""
    async with api.client(admin_token) as http:
        response = await http.post(
            f"/v1/tenants/{tenant.name}/api-keys", json={"name": "test", "scopes": scopes}
        )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def api_key(api: ApiServer, admin_token: str, tenant: TenantSetup, scopes: list[str]) -> str:
    key: str = (await new_api_key(api, admin_token, tenant, scopes))["key"]
    return key
