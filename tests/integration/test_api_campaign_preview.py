"""A campaign's message previewed for a sample contact through the customer API (the API as its
own process, the chart's RBAC): rendered by the sender's own renderer with the contact's
fields, the Tenant's postal address and the footer every sent message gets; a template that
does not compile, is over the sandbox's limits or needs a field the contact lacks is a 400
naming its field; another tenant's contact is a 404; nothing is audited (nothing is written)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client

from penguinmails.api.http.routes.campaign_preview import PREVIEW_UNSUBSCRIBE_URL, SAMPLE_EMAIL
from penguinmails.sender.render import MAX_OUTPUT_CHARS
from tests.integration.api_stack import (
    ApiServer,
    TenantAccess,
    api_database_url,
    api_kubeconfig,
    api_server,
    tenant_access,
)
from tests.integration.conftest import GROUP, VERSION

pytestmark = pytest.mark.integration

__all__ = ["api_database_url", "api_kubeconfig", "api_server"]  # fixtures used by name

CSV = b"email,first_name,company\nada@example.com,Ada,A&B <Labs>\n"


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    return {"PM_SUPPRESSION_KEY": "preview-master-key-0123456789abcdef"}  # contacts need it


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenant(
    api_server: ApiServer, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> TenantAccess:
    return await tenant_access(
        api_server,
        db_pool,
        core,
        "preview",
        [["campaigns:read"], ["campaigns:read", "contacts:read"]],
    )


@pytest.fixture(scope="module")
def tenant_object(tenant: TenantAccess, custom_objects: client.CustomObjectsApi) -> Iterator[None]:
    """The Tenant resource with its postal address (no operator here: only the object)."""
    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": tenant.setup.name},
            "spec": {
                "tier": "starter",
                "contactEmail": "ops@example.com",
                "postalAddress": {"street": "1 Penguin Way", "city": "Iceberg", "country": "AQ"},
            },
        },
    )
    yield
    custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", tenant.setup.name)


async def _contact(api: ApiServer, tenant: TenantAccess) -> dict[str, Any]:
    async with api.client(tenant.owner) as http:
        started = await http.post(
            f"{tenant.base}/contact-imports",
            params={"list": "leads"},
            content=CSV,
            headers={"Content-Type": "text/csv"},
        )
        assert started.status_code == 202, started.text
        job = started.json()
        while job["state"] == "running":
            await asyncio.sleep(0.2)
            job = (await http.get(f"{tenant.base}/contact-imports/{job['id']}")).json()
        assert job["state"] == "succeeded" and job["imported"] == 1, job
        listed = await http.get(f"{tenant.base}/contacts", params={"list": "leads"})
    found: dict[str, Any] = listed.json()["data"][0]
    return found


async def test_preview_renders_as_the_sender_does_and_names_the_faulty_field(
    api_server: ApiServer, tenant: TenantAccess, tenant_object: None, db_pool: asyncpg.Pool
) -> None:
    contact = await _contact(api_server, tenant)
    path = f"{tenant.base}/campaigns/preview"
    body = {
        "subject": "Hello {{ first_name }}",
        "text": "Hi {{ first_name }} of {{ company }}, write to {{ email }}.",
        "html": "<p>Hi {{ first_name }} of {{ company }}</p>",
        "contactId": contact["id"],
    }
    async with api_server.client(tenant.viewer) as http:  # reading is enough: nothing is written
        shown = await http.post(path, json=body)
        assert shown.status_code == 200, shown.text
        preview = shown.json()
        assert preview["contact"] == {
            "email": "ada@example.com",
            "fields": {"first_name": "Ada", "company": "A&B <Labs>"},
        }
        assert preview["subject"] == "Hello Ada"
        address = "1 Penguin Way, Iceberg, AQ"
        assert preview["postalAddress"] == address
        assert preview["text"] == (
            "Hi Ada of A&B <Labs>, write to ada@example.com."
            f"\n\n--\n{address}\nUnsubscribe: {PREVIEW_UNSUBSCRIBE_URL}\n"
        )
        # The HTML template is autoescaped, as in the sender; the footer follows it.
        assert preview["html"].startswith("<p>Hi Ada of A&amp;B &lt;Labs&gt;</p><hr>"), preview
        assert address in preview["html"] and PREVIEW_UNSUBSCRIBE_URL in preview["html"]

        # Without a contact: the sample address, no fields; an HTML-only template gets a text part.
        sample = await http.post(path, json={"subject": "For {{ email }}", "html": "<p>Hi</p>"})
        assert sample.status_code == 200, sample.text
        assert sample.json()["subject"] == f"For {SAMPLE_EMAIL}"
        assert sample.json()["text"].startswith("Hi\n\n--\n"), sample.json()

        # Each fault named by its field, with the sender's reason.
        faults = {
            "text": ({**body, "text": "Dear {{ surname }}"}, "surname"),
            "subject": ({**body, "subject": "Hello {{ first_name"}, "does not compile"),
            "html": (
                {**body, "html": "{{ 'x' * 10 ** 9 }}"},
                f"output limit of {MAX_OUTPUT_CHARS}",
            ),
        }
        for field, (bad, reason) in faults.items():
            refused = await http.post(path, json=bad)
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["param"] == field and error["code"] == "template_invalid", error
            assert reason in error["message"], error
        no_body = await http.post(path, json={"subject": "Hi"})
        assert no_body.status_code == 400 and no_body.json()["error"]["param"] == "text"

    # An API key needs contacts:read as well: the preview shows a contact's fields.
    async with api_server.client(tenant.keys[0]) as http:
        refused = await http.post(path, json=body)
        assert refused.status_code == 403, refused.text
    async with api_server.client(tenant.keys[1]) as http:
        assert (await http.post(path, json=body)).status_code == 200

    async with db_pool.acquire() as conn:
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action LIKE 'campaign.%'",
            tenant.setup.id,
        )
    assert audited == 0


async def test_another_tenants_contact_is_not_found(
    api_server: ApiServer, tenant: TenantAccess, db_pool: asyncpg.Pool, core: client.CoreV1Api
) -> None:
    other = await tenant_access(api_server, db_pool, core, "preview-other", [])
    async with api_server.client(tenant.owner) as http:
        listed = await http.get(f"{tenant.base}/contacts", params={"list": "leads"})
        mine = listed.json()["data"]
    contact = mine[0] if mine else await _contact(api_server, tenant)
    async with api_server.client(other.owner) as http:
        refused = await http.post(
            f"{other.base}/campaigns/preview",
            json={"subject": "Hi {{ first_name }}", "text": "x", "contactId": contact["id"]},
        )
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"]["param"] == "contactId"
    assert "Ada" not in refused.text
