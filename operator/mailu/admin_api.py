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
