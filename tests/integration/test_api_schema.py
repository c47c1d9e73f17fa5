"""Schemathesis over the API's whole OpenAPI document, against the API running as its own
process: generated requests (valid and invalid) to every operation, signed in as a tenant's
owner and aimed at that tenant; no answer is a 5xx, and every answer matches the document
(status code documented, content type, body schema)."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, given, settings
from kubernetes import client
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

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
    own_redis_database,
    sign_in,
)

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

EXAMPLES_PER_OPERATION = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_env(redis_url: str) -> dict[str, str]:
    # Its own Redis database: the fuzzer's failed sign-ins must not throttle other modules'.
    # GDPR configured, as in production (unset, those two endpoints answer 503). Rate limits
    # that never bind: the fuzzer's thousands of requests must reach the handlers (the limits'
    # path at its defaults is test_api_rate_limits.py's; their 429 is documented everywhere).
    return {
        "PM_REDIS_URL": own_redis_database(redis_url, 2),
        "PM_SUPPRESSION_KEY": "fuzz-master-key-0123456789abcdef0123",
        "PM_API_KEY_REQUESTS_PER_MINUTE": "1000000",
        "PM_API_SOURCE_REQUESTS_PER_MINUTE": "1000000",
    }


@pytest.fixture(scope="module")
def fuzzed_api(api_server: ApiServer) -> ApiServer:
    # FastAPI builds the document on its first request: 10 s on this machine at a load of 17,
    # schemathesis's loader timeout. Built once here, then served from FastAPI's cache.
    httpx.get(f"{api_server.url}/v1/openapi.json", timeout=120).raise_for_status()
    return api_server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def owner(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> tuple[TenantSetup, str, list[str]]:
    """The tenant, its owner's access token, and spare sign-ins for the logout operation to
    revoke (made before the fuzzer's failed sign-ins throttle this source address)."""
    tenant = await make_tenant(db_pool, core, "fuzz")
    email = await make_user(db_pool, tenant, Role.OWNER)
    count = EXAMPLES_PER_OPERATION + 6
    tokens = [(await sign_in(api_server, email))["accessToken"] for _ in range(count)]
    return tenant, tokens[0], tokens[1:]


def test_every_operation_answers_as_documented(
    fuzzed_api: ApiServer, owner: tuple[TenantSetup, str, list[str]]
) -> None:
    tenant, token, spare = owner

    schema = schemathesis.openapi.from_url(f"{fuzzed_api.url}/v1/openapi.json")
    assert schema.raw_schema["openapi"].startswith("3.1")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    calls: dict[str, int] = {}
    statuses: dict[int, int] = {}

    def fuzz(operation: Any) -> None:
        label = f"{operation.method.upper()} {operation.path}"

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            # Aim most requests at the owner's tenant so they reach the handlers, not the 404.
            if case.path_parameters and "tenant" in case.path_parameters:
                case.path_parameters["tenant"] = tenant.name
            bearer = token
            if label == "POST /v1/auth/logout":  # a sign-in of its own to sign out of
                bearer = spare.pop()
            response = case.call(
                base_url=fuzzed_api.url, headers={"Authorization": f"Bearer {bearer}"}
            )
            calls[label] = calls.get(label, 0) + 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=CHECKS)

        check()

    for operation in operations:
        fuzz(operation)
    print(
        f"\nschemathesis: {sum(calls.values())} requests over {len(calls)} operations, "
        f"by status: {dict(sorted(statuses.items()))}"
    )
    assert len(calls) == len(operations) == OPERATIONS
    assert not fuzzed_api.log().count("Traceback"), fuzzed_api.log()[-4000:]
