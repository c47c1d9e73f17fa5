"""The customer API answers the RFC 8058 unsubscribe links too (`/u/<token>`, outside `/v1`,
no authentication) on its own login, when it holds the platform's key ring; without it the
pages say the service is unavailable (503), as GDPR does. The token names a delivery that does
not exist: a POST accepted as one-click reaches the database as the API's login (the lookup and
the update run) and ends at the neutral 404 page."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import TokenPurpose, make_token
from tests.integration.api_stack import api_database_url, api_kubeconfig, start_api, stop_api

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig"]  # fixtures used by name

MASTER_KEY = "api-unsubscribe-master-key-0123456789abcdef"
TENANT = uuid.uuid4()
LINK = "/u/" + make_token(
    MasterKeys.parse(MASTER_KEY).token_key(TENANT), TokenPurpose.UNSUBSCRIBE, TENANT, 2**40
)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def test_the_api_serves_the_links_only_with_the_key_ring(
    api_kubeconfig: Path,
    api_database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    answers: dict[str, list[int]] = {}
    for name, extra in (("with", {"PM_SUPPRESSION_KEY": MASTER_KEY}), ("without", {})):
        process, api = start_api(
            tmp_path_factory.mktemp(f"api-{name}"),
            database_url=api_database_url,
            redis_url=redis_url,
            kubeconfig=api_kubeconfig,
            **extra,
        )
        try:
            async with api.client() as http:
                page = await http.get(LINK)
                posted = await http.post(LINK, data=ONE_CLICK)
                refused = await http.post(LINK, data={"List-Unsubscribe": "Yes"})
                forged = await http.post("/u/" + "a" * 55, data=ONE_CLICK)
                schema = (await http.get("/v1/openapi.json")).json()
        finally:
            stop_api(process)
        answers[name] = [r.status_code for r in (page, posted, refused, forged)]
        assert not [p for p in schema["paths"] if p.startswith("/u")]
        assert "Traceback" not in api.log(), api.log()[-4000:]
    assert answers == {"with": [200, 404, 400, 404], "without": [503, 503, 503, 503]}
