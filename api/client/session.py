"""One authenticated conversation with the customer API: the bearer credential on every
request, the access token refreshed before it expires (or once after a 401 says it has),
errors raised as `ApiError` with the API's own message and param, and lists followed page by
page.

Refreshing takes the credentials file's lock and reads the file again first: another CLI
process may have refreshed already, and presenting the refresh token it used would be taken as
theft (the API revokes the whole sign-in).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from penguinmails.api.client import credentials as stored
from penguinmails.api.client.credentials import Credentials

__all__ = ["PAGE_SIZE", "ApiError", "JsonObject", "Session", "with_tokens"]

JsonObject = dict[str, Any]

PAGE_SIZE = 100
"""Items per page when following a list (the API's maximum)."""

REFRESH_MARGIN = 30.0
"""Seconds before its expiry that an access token is renewed, for clock skew and slow calls."""


class ApiError(Exception):
    """The API refused the request (its error envelope), or could not be reached (status 0)."""

    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, type_: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type_

    def __str__(self) -> str:
        return f"{self.message} (param: {self.param})" if self.param else self.message

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()["error"]
            return cls(
                response.status_code,
                str(body.get("code", "")),
                str(body.get("message", "")),
                body.get("param"),
                str(body.get("type", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            text = response.text.strip()[:200] or response.reason_phrase
            return cls(response.status_code, "", f"HTTP {response.status_code}: {text}")


def with_tokens(credentials: Credentials, body: Mapping[str, Any]) -> Credentials:
    """`credentials` holding the tokens `/v1/auth/token` or `/v1/auth/refresh` answered."""
    return replace(
        credentials,
        access_token=str(body["accessToken"]),
        refresh_token=str(body["refreshToken"]),
        expires_at=time.time() + float(body["expiresIn"]),
        api_key=None,
    )


class Session:
    """Requests to `credentials.api_url` as the stored user or API key.

    `path` is the credentials file: refreshed tokens are written back to it. Without it (a
    one-off session, e.g. while signing in), nothing is stored."""

    def __init__(
        self,
        credentials: Credentials,
        path: Path | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.path = path
        self._http = httpx.Client(
            base_url=credentials.api_url.rstrip("/"), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        content: Callable[[], Iterator[bytes]] | None = None,
    ) -> httpx.Response:
        """The answer (2xx); any other status raises ApiError with the API's message.
        `content` makes a streamed body (called again for a retry), instead of `json`."""
        if authenticated and self._expiring():
            self.refresh()
        response = self._send(method, path, json, params, headers, authenticated, content)
        if response.status_code == 401 and authenticated and self.credentials.is_user:
            # The access token expired early (clocks differ) or was revoked: one refresh
            # tells which; a revoked sign-in fails it and the user is told to sign in again.
            self.refresh()
            response = self._send(method, path, json, params, headers, authenticated, content)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> JsonObject:
        body: JsonObject = self.request("GET", path, params=params).json()
        return body

    def post(self, path: str, body: Any = None) -> JsonObject:
        answer = self.request("POST", path, json=body)
        result: JsonObject = answer.json() if answer.content else {}
        return result

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def pages(
        self, path: str, params: Mapping[str, str | int] | None = None
    ) -> Iterator[JsonObject]:
        """Every item of a list, following `nextCursor` until the last page."""
        query: dict[str, str | int] = {**(params or {}), "limit": PAGE_SIZE}
        while True:
            page = self.get(path, query)
            yield from page["data"]
            cursor = page.get("nextCursor")
            if not page.get("hasMore") or not cursor:
                return
            query["cursor"] = cursor

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
        authenticated: bool,
        content: Callable[[], Iterator[bytes]] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        secret = self.credentials.api_key or self.credentials.access_token
        if authenticated and secret:
            sent["Authorization"] = f"Bearer {secret}"
        try:
            if content is not None:
                return self._http.request(
                    method, path, content=content(), params=params, headers=sent
                )
            return self._http.request(method, path, json=body, params=params, headers=sent)
        except httpx.HTTPError as error:
            raise ApiError(
                0,
                "unreachable",
                f"cannot reach the API at {self.credentials.api_url}: "
                f"{error or type(error).__name__} (check --api-url or PM_API_URL)",
            ) from error

    # -- tokens --------------------------------------------------------------------------

    def _expiring(self) -> bool:
        expires = self.credentials.expires_at
        return (
            self.credentials.is_user
            and expires is not None
            and expires - REFRESH_MARGIN <= time.time()
        )

    def refresh(self) -> None:
        """New tokens for the stored refresh token, written back to the credentials file."""
        if self.path is None:
            self._refresh_now()
            return
        with stored.refresh_lock(self.path):
            on_disk = stored.load(self.path)
            if (
                on_disk is not None
                and on_disk.is_user
                and on_disk.refresh_token != self.credentials.refresh_token
            ):
                # Another process refreshed while this one waited: its tokens are the
                # current ones (ours were used and are now void).
                self.credentials = replace(on_disk, api_url=self.credentials.api_url)
                if not self._expiring():
                    return
            self._refresh_now()
            # An --api-url given for this command is not made the stored one.
            home = on_disk.api_url if on_disk is not None else self.credentials.api_url
            stored.save(self.path, replace(self.credentials, api_url=home))

    def _refresh_now(self) -> None:
        response = self._send(
            "POST",
            "/v1/auth/refresh",
            {"refreshToken": self.credentials.refresh_token},
            None,
            None,
            authenticated=False,
        )
        if response.status_code >= 400:
            error = ApiError.from_response(response)
            if response.status_code == 401:
                error.message += " Run `penguinmails login` again."
            raise error
        self.credentials = with_tokens(self.credentials, response.json())
