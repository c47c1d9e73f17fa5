"""The customer API's operations as typed methods over a `Session`, one per endpoint the CLI
uses. Answers are the API's JSON bodies unchanged (camelCase, as docs/api.md shows them), so
that `-o json` prints exactly what the API said.

Of contacts, only imports are here (`penguinmails contacts import`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from penguinmails.api.client.session import JsonObject, Session

__all__ = ["AuditFilter", "Client"]

AuditFilter = dict[str, str]
"""`actor`, `action`, `target`, `since`, `until` of GET .../audit-log."""


def _seg(value: str) -> str:
    """One path segment, escaped: a name never changes which endpoint is called."""
    return quote(value, safe="")


class Client:
    """The endpoints of one tenant (`tenant`), plus the account's own."""

    def __init__(self, session: Session, tenant: str) -> None:
        self.session = session
        self.tenant = tenant

    def _base(self, collection: str) -> str:
        return f"/v1/tenants/{_seg(self.tenant)}/{collection}"

    # -- sending domains ---------------------------------------------------------------

    def list_domains(self) -> Iterator[JsonObject]:
        return self.session.pages(self._base("sending-domains"))

    def get_domain(self, name: str) -> JsonObject:
        return self.session.get(f"{self._base('sending-domains')}/{_seg(name)}")

    def create_domain(self, name: str, spec: dict[str, Any]) -> JsonObject:
        return self.session.post(self._base("sending-domains"), {"name": name, "spec": spec})

    def delete_domain(self, name: str) -> None:
        self.session.delete(f"{self._base('sending-domains')}/{_seg(name)}")

    # -- SMTP servers ------------------------------------------------------------------

    def list_servers(self) -> Iterator[JsonObject]:
        return self.session.pages(self._base("smtp-servers"))

    def get_server(self, name: str) -> JsonObject:
        return self.session.get(f"{self._base('smtp-servers')}/{_seg(name)}")

    # -- campaigns ---------------------------------------------------------------------

    def list_campaigns(self) -> Iterator[JsonObject]:
        return self.session.pages(self._base("campaigns"))

    def get_campaign(self, name: str) -> JsonObject:
        return self.session.get(f"{self._base('campaigns')}/{_seg(name)}")

    def create_campaign(self, name: str, spec: dict[str, Any]) -> JsonObject:
        return self.session.post(self._base("campaigns"), {"name": name, "spec": spec})

    def pause_campaign(self, name: str) -> JsonObject:
        return self.session.post(f"{self._base('campaigns')}/{_seg(name)}/pause")

    def resume_campaign(self, name: str) -> JsonObject:
        return self.session.post(f"{self._base('campaigns')}/{_seg(name)}/resume")

    def delete_campaign(self, name: str) -> None:
        self.session.delete(f"{self._base('campaigns')}/{_seg(name)}")

    # -- API keys ----------------------------------------------------------------------

    def list_keys(self) -> Iterator[JsonObject]:
        return self.session.pages(self._base("api-keys"))

    def create_key(self, name: str, scopes: list[str], expires_at: str | None) -> JsonObject:
        body: JsonObject = {"name": name, "scopes": scopes}
        if expires_at is not None:
            body["expiresAt"] = expires_at
        return self.session.post(self._base("api-keys"), body)

    def revoke_key(self, key_id: str) -> None:
        self.session.delete(f"{self._base('api-keys')}/{_seg(key_id)}")

    # -- audit log ---------------------------------------------------------------------

    def audit_log(self, filters: AuditFilter) -> Iterator[JsonObject]:
        return self.session.pages(self._base("audit-log"), filters)

    # -- contact imports ---------------------------------------------------------------

    def upload_contacts(
        self, list_name: str, chunks: Callable[[], Iterator[bytes]], size: int
    ) -> JsonObject:
        """Start an import of a CSV streamed from `chunks` (`size` bytes): the job (202)."""
        answer = self.session.request(
            "POST",
            self._base("contact-imports"),
            params={"list": list_name},
            headers={"Content-Type": "text/csv", "Content-Length": str(size)},
            content=chunks,
        )
        job: JsonObject = answer.json()
        return job

    def list_imports(self) -> Iterator[JsonObject]:
        """The tenant's imports, newest first (pages fetched as they are read)."""
        return self.session.pages(self._base("contact-imports"))

    def get_import(self, import_id: str) -> JsonObject:
        return self.session.get(f"{self._base('contact-imports')}/{_seg(import_id)}")

    def import_errors(self, import_id: str) -> Iterator[JsonObject]:
        return self.session.pages(f"{self._base('contact-imports')}/{_seg(import_id)}/errors")
