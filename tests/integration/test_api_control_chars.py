"""Control characters in requests, through the API running as its own process: the OpenAPI
document is walked and every string parameter (path, query, header) and every string field of
every JSON body, at any depth, is sent holding a NUL; each answer is a 400 naming that field,
never a 5xx (PostgreSQL cannot store NUL in text). The operations and fields probed are counted
and printed. A CSV cell holding a NUL is a skipped line naming its line and column; an
Idempotency-Key holding one is refused before any route (raw HTTP: clients will not send it)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.common.db.accounts import Role
from tests.integration.api_stack import (
    OPERATIONS,
    ApiServer,
    TenantSetup,
    api_database_url,
    api_kubeconfig,
    api_server,
    make_tenant,
    make_user,
    sign_in,
)

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

NUL = "bad\x00value"
MAX_DEPTH = 12


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    return {"PM_SUPPRESSION_KEY": "control-chars-master-key-0123456789abcdef"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def owner(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> tuple[TenantSetup, str]:
    tenant = await make_tenant(db_pool, core, "ctrl")
    email = await make_user(db_pool, tenant, Role.OWNER)
    return tenant, (await sign_in(api_server, email))["accessToken"]


class Schema:
    def __init__(self, document: dict[str, Any]) -> None:
        self.components = document.get("components", {}).get("schemas", {})

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rpartition("/")[2]]
        return schema

    def string_fields(
        self, schema: dict[str, Any], path: str = "", depth: int = 0
    ) -> Iterator[tuple[str, Any]]:
        """(param as the API names it, a JSON body with NUL at that field) for each string."""
        if depth > MAX_DEPTH:
            return
        schema = self.resolve(schema)
        for branch in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
            yield from self.string_fields(branch, path, depth + 1)
        kind = schema.get("type")
        if kind == "string" or (isinstance(kind, list) and "string" in kind):
            yield path, NUL
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            for param, value in self.string_fields(
                sub, f"{path}.{name}" if path else name, depth + 1
            ):
                yield param, {name: value}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            key = "someKey"
            for param, value in self.string_fields(
                extra, f"{path}.{key}" if path else key, depth + 1
            ):
                yield param, {key: value}
        if kind == "array" and isinstance(schema.get("items"), dict):
            for param, value in self.string_fields(schema["items"], f"{path}[0]", depth + 1):
                yield param, [value]


def _is_string(schema: dict[str, Any], resolve: Any) -> bool:
    schema = resolve(schema)
    kind = schema.get("type")
    if kind == "string":
        return True
    return any(_is_string(b, resolve) for b in schema.get("anyOf", []) + schema.get("oneOf", []))


async def test_a_nul_in_any_string_field_is_a_400_naming_it(
    api_server: ApiServer, owner: tuple[TenantSetup, str]
) -> None:
    tenant, token = owner
    async with api_server.client(token) as http:
        document = (await http.get("/v1/openapi.json")).json()
        schema = Schema(document)
        operations = 0
        probed_operations: set[str] = set()
        probes: list[tuple[str, str, str]] = []
        for template, methods in document["paths"].items():
            for method, operation in methods.items():
                operations += 1
                label = f"{method.upper()} {template}"
                parameters = operation.get("parameters", [])
                path_values = {
                    p["name"]: tenant.name if p["name"] == "tenant" else "x1"
                    for p in parameters
                    if p["in"] == "path"
                }
                body = (
                    operation.get("requestBody", {})
                    .get("content", {})
                    .get("application/json", {})
                    .get("schema")
                )
                cases: list[tuple[str, dict[str, Any]]] = []
                for p in parameters:
                    if not _is_string(p.get("schema", {}), schema.resolve):
                        continue
                    if p["in"] == "path":
                        cases.append((p["name"], {"path": {p["name"]: NUL}}))
                    elif p["in"] == "query":
                        cases.append((p["name"], {"params": {p["name"]: NUL}}))
                    # Headers holding a NUL cannot be sent by an HTTP client: the raw test below.
                if body is not None:
                    seen: set[str] = set()
                    for param, value in schema.string_fields(body):
                        if param and param not in seen:
                            seen.add(param)
                            cases.append((param, {"json": value}))
                for param, case in cases:
                    values = {**path_values, **case.get("path", {})}
                    url = template.format(**{k: quote(v, safe="") for k, v in values.items()})
                    headers = {"Idempotency-Key": str(uuid.uuid4())}
                    if "json" in case:
                        response = await http.request(
                            method.upper(), url, json=case["json"], headers=headers
                        )
                    else:
                        response = await http.request(
                            method.upper(), url, params=case.get("params"), headers=headers
                        )
                    probes.append((label, param, str(response.status_code)))
                    assert response.status_code == 400, (label, param, response.text)
                    error = response.json()["error"]
                    assert error["param"] == param, (label, param, error)
                    assert "control character U+0000" in error["message"], error
                    assert response.headers["X-Request-Id"]
                    probed_operations.add(label)
    print(
        f"\ncontrol characters: {len(probes)} fields probed over {len(probed_operations)} of "
        f"{operations} operations (the rest take no string), every answer 400 naming the field"
    )
    assert operations == OPERATIONS
    # Every operation that takes a string was probed; those are most of the API.
    assert len(probed_operations) >= operations // 2, sorted(probed_operations)
    assert not api_server.log().count("Traceback")


async def test_a_nul_in_an_idempotency_key_is_refused_before_any_route(
    api_server: ApiServer, owner: tuple[TenantSetup, str]
) -> None:
    tenant, token = owner
    host, _, port = api_server.url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"name": "x"}'
    writer.write(
        f"POST /v1/tenants/{tenant.name}/contact-lists HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
        + b"Idempotency-Key: a\x01b\r\n\r\n"
        + body
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status = answer.split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 400"), answer[:500]


async def test_a_nul_in_a_csv_cell_is_a_skipped_line_naming_its_column(
    api_server: ApiServer, owner: tuple[TenantSetup, str]
) -> None:
    tenant, token = owner
    csv = b"email,first_name\na@example.com,Ann\nb@example.com,B\x00b\nc@example.com,Cy\n"
    async with api_server.client(token) as http:
        base = f"/v1/tenants/{tenant.name}/contact-imports"
        made = await http.post(
            base, params={"list": "ctrl"}, content=csv, headers={"Content-Type": "text/csv"}
        )
        assert made.status_code == 202, made.text
        job = made.json()
        while job["state"] == "running":
            await asyncio.sleep(0.2)
            job = (await http.get(f"{base}/{job['id']}")).json()
        assert job["state"] == "succeeded", job
        assert (job["imported"], job["skipped"]) == (2, 1)
        errors = (await http.get(f"{base}/{job['id']}/errors")).json()["data"]
        assert [(e["line"], e["field"]) for e in errors] == [(3, "first_name")], errors
        assert "U+0000" in errors[0]["message"]
