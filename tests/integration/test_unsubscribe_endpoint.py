"""The one-click unsubscribe endpoint's answers to what mailbox providers and people send it
(RFC 8058: the body `List-Unsubscribe=One-Click`, form-urlencoded or multipart/form-data), on
the real database. The token names a delivery that does not exist, so a body accepted as
one-click ends at the neutral 404 page and one refused ends at 400 before any lookup."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from penguinmails.api.http.routes.unsubscribe import MAX_BODY_BYTES
from penguinmails.api.unsubscribe import make_app
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import TokenPurpose, make_token

pytestmark = pytest.mark.integration

KEYS = MasterKeys.parse("1:" + "k" * 32)
TENANT = uuid.uuid4()
LINK = "/u/" + make_token(KEYS.token_key(TENANT), TokenPurpose.UNSUBSCRIBE, TENANT, 2**40)


def client(pool: asyncpg.Pool) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(make_app(pool, KEYS)), base_url="http://u.test"
    )


async def test_one_click_in_either_encoding_and_nothing_else(db_pool: asyncpg.Pool) -> None:
    async with client(db_pool) as http:
        urlencoded = await http.post(LINK, data={"List-Unsubscribe": "One-Click"})
        multipart = await http.post(LINK, files={"List-Unsubscribe": (None, "One-Click")})
        assert multipart.request.headers["content-type"].startswith("multipart/form-data")
        other = await http.post(LINK, data={"List-Unsubscribe": "Yes"})
        empty = await http.post(LINK)
        too_large = await http.post(
            LINK,
            content=b"List-Unsubscribe=One-Click&" + b"x" * MAX_BODY_BYTES,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert (urlencoded.status_code, multipart.status_code) == (404, 404)
    assert "Link not valid" in urlencoded.text
    assert (other.status_code, empty.status_code, too_large.status_code) == (400, 400, 413)
    assert "List-Unsubscribe=One-Click" in other.text


async def test_the_page_changes_nothing_and_forged_links_get_the_neutral_page(
    db_pool: asyncpg.Pool,
) -> None:
    async with client(db_pool) as http:
        page = await http.get(LINK)
        forged = await http.get("/u/" + "a" * 55)
        health = await http.get("/healthz")
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert forged.status_code == 404 and "Link not valid" in forged.text
    assert (health.status_code, health.text) == (200, "ok")
