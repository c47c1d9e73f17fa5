"""A client of MailU's admin REST API (``/api/v1``), as its documentation describes it.

The raw token goes in ``Authorization`` (no scheme: the form MailU documents as safe); errors
answer 401 without the header, 403 with a wrong token, with a ``{"code", "message"}`` envelope.
Every method is idempotent: it reads first and creates only what is missing.
"""

from __future__ import annotations

from typing import Any

import httpx


class MailuAdminError(Exception):
    """The admin API refused or failed; the message never holds the token or a password."""


class MailuAdmin:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": token},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"MailuAdmin({self._http.base_url})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, json: Any = None) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.TransportError as error:
            raise MailuAdminError(f"MailU admin API unreachable: {type(error).__name__}") from None
        if response.status_code in (401, 403):
            raise MailuAdminError(
                f"MailU admin API refused the token (HTTP {response.status_code}): the API_TOKEN "
                "in mailu.env and the one in the SmtpServer's <name>-mailu Secret differ"
            )
        return response

    @staticmethod
    def _fail(what: str, response: httpx.Response) -> MailuAdminError:
        try:
            message = str(response.json().get("message", ""))
        except ValueError:
            message = ""
        return MailuAdminError(f"{what}: HTTP {response.status_code} {message}".strip())

    async def ensure_domain(self, domain: str) -> None:
        found = await self._request("GET", f"/domain/{domain}")
        if found.status_code == 200:
            return
        if found.status_code != 404:
            raise self._fail(f"reading domain {domain}", found)
        created = await self._request("POST", "/domain", {"name": domain})
        if created.status_code not in (200, 201, 409):
            raise self._fail(f"creating domain {domain}", created)

    async def ensure_user(self, email: str, raw_password: str) -> None:
        """The relay user the senders authenticate as; its password is set when created."""
        found = await self._request("GET", f"/user/{email}")
        if found.status_code == 200:
            return
        if found.status_code != 404:
            raise self._fail(f"reading user {email}", found)
        created = await self._request(
            "POST", "/user", {"email": email, "raw_password": raw_password, "enabled": True}
        )
        if created.status_code not in (200, 201, 409):
            raise self._fail(f"creating user {email}", created)

    async def dkim_record(self, domain: str, *, generate: bool = True) -> str | None:
        """The DKIM TXT record MailU publishes for the domain, generating keys if asked."""
        found = await self._request("GET", f"/domain/{domain}")
        if found.status_code != 200:
            raise self._fail(f"reading domain {domain}", found)
        record = found.json().get("dns_dkim")
        if record or not generate:
            return str(record) if record else None
        generated = await self._request("POST", f"/domain/{domain}/dkim")
        if generated.status_code not in (200, 201):
            raise self._fail(f"generating DKIM keys of {domain}", generated)
        again = await self._request("GET", f"/domain/{domain}")
        record = again.json().get("dns_dkim") if again.status_code == 200 else None
        return str(record) if record else None

    # -- what the mailboxes module manages (operator/mailu/mailboxes.py) ---------------------

    async def _call(
        self, method: str, path: str, what: str, json: Any = None, *, ok: tuple[int, ...] = (200,)
    ) -> Any:
        response = await self._request(method, path, json)
        if response.status_code not in ok:
            raise self._fail(what, response)
        try:
            return response.json()
        except ValueError:
            return None

    async def _list(self, kind: str) -> list[dict[str, Any]]:
        answer = await self._call("GET", f"/{kind}", f"listing {kind}s")
        return [item for item in answer or [] if isinstance(item, dict)]

    async def list_domains(self) -> list[dict[str, Any]]:
        return await self._list("domain")

    async def list_users(self) -> list[dict[str, Any]]:
        return await self._list("user")

    async def list_relays(self) -> list[dict[str, Any]]:
        return await self._list("relay")

    async def create_domain(self, name: str, comment: str) -> None:
        body = {"name": name, "comment": comment}
        await self._call("POST", "/domain", f"creating domain {name}", body)

    async def delete_domain(self, name: str) -> None:
        # 404: gone already (a crash after the call); deleting it again is done.
        await self._call("DELETE", f"/domain/{name}", f"deleting domain {name}", ok=(200, 404))

    async def create_user(self, email: str, raw_password: str, fields: dict[str, Any]) -> None:
        body = {"email": email, "raw_password": raw_password, "enabled": True, **fields}
        await self._call("POST", "/user", f"creating user {email}", body)

    async def update_user(self, email: str, fields: dict[str, Any]) -> None:
        await self._call("PATCH", f"/user/{email}", f"updating user {email}", fields)

    async def delete_user(self, email: str) -> None:
        await self._call("DELETE", f"/user/{email}", f"deleting user {email}", ok=(200, 404))

    async def create_relay(self, name: str, smtp: str, comment: str) -> None:
        body = {"name": name, "smtp": smtp, "comment": comment}
        await self._call("POST", "/relay", f"creating relayed domain {name}", body)

    async def update_relay(self, name: str, smtp: str) -> None:
        await self._call(
            "PATCH", f"/relay/{name}", f"updating relayed domain {name}", {"smtp": smtp}
        )

    async def delete_relay(self, name: str) -> None:
        await self._call(
            "DELETE", f"/relay/{name}", f"deleting relayed domain {name}", ok=(200, 404)
        )
