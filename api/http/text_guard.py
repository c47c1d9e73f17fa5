"""The one check of every request's text for control characters (common/text.py), before any
route sees it: path parameters, query parameters, headers and JSON bodies (at any depth, keys
included, the custom resources' specs too). A hit is a 400 `parameter_invalid` naming the
field in the wire's own terms (`email`, `spec.subject`, `emails[2]`, `list`, `Idempotency-Key`)
instead of a 500 when PostgreSQL refuses a NUL, or bad text stored and shown later. CSV
uploads are checked line by line by their importer (common/db/contacts.py), which names line
and column; their body is streamed past this check, never buffered here.

A pure ASGI middleware rather than a pydantic type on each field: it covers query, path and
header parameters too, the resources' models (api/v1alpha1, shared with the CRDs) stay as they
are, and a new route cannot forget it. JSON bodies are parsed here only when their bytes hold
an escape of a control character (JSON cannot carry them raw), so a clean request costs one
scan of its bytes."""

from __future__ import annotations

import functools
import json
import re
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from penguinmails.common.text import control_character

from .errors import ApiError, error_response

__all__ = ["TextGuard"]

# \u0000-\u001f and \u007f escapes (any case); \t \n \r escapes are text and not looked for.
_ESCAPE = re.compile(rb"\\u00[01][0-9a-fA-F]|\\u007[fF]")


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")


def _refusal(param: str, what: str) -> ApiError:
    return ApiError.invalid(
        f"{param}: contains the control character {what}: remove it (text may hold tabs and "
        "line breaks only where it spans lines).",
        param,
    )


def _in_json(value: Any, path: str = "") -> tuple[str, str] | None:
    """(param, character) of the first string (or key) holding a control character."""
    if isinstance(value, str):
        found = control_character(value)
        return (path or "body", found) if found else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            hit = _in_json(item, f"{path}[{index}]")
            if hit:
                return hit
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            found = control_character(key)
            if found:
                return _printable(name), found
            hit = _in_json(item, name)
            if hit:
                return hit
    return None


class TextGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hit = self._in_path(scope) or self._in_query(scope) or self._in_headers(scope)
        if hit is None and self._json(scope):
            body, receive = await _buffered(receive)
            if _ESCAPE.search(body):
                try:
                    hit = _in_json(json.loads(body))
                except ValueError:
                    hit = None  # not JSON: the route's own validation says so
        if hit is not None:
            await error_response(_refusal(*hit))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _in_path(self, scope: Scope) -> tuple[str, str] | None:
        path: str = scope["path"]
        found = control_character(path, one_line=True)
        if found is None:
            return None
        # Name the path parameter: the documented path templates say which segment it is.
        app: Any = scope.get("app")
        document: dict[str, Any] = app.openapi() if hasattr(app, "openapi") else {}
        for template in document.get("paths", {}):
            match = _template(template).match(path)
            if match:
                for name, value in match.groupdict().items():
                    if control_character(value, one_line=True):
                        return name, found
        return "path", found

    @staticmethod
    def _in_query(scope: Scope) -> tuple[str, str] | None:
        raw = scope.get("query_string", b"").decode("latin-1")
        for name, value in parse_qsl(raw, keep_blank_values=True):
            found = control_character(name, one_line=True) or control_character(
                value, one_line=True
            )
            if found:
                return _printable(name), found
        # A malformed escape parse_qsl dropped, e.g. a bare %00 name.
        found = control_character(unquote(raw), one_line=True)
        return ("query", found) if found else None

    @staticmethod
    def _in_headers(scope: Scope) -> tuple[str, str] | None:
        for name, value in scope.get("headers", []):
            found = control_character(value.decode("latin-1").replace("\t", " "), one_line=True)
            if found:
                return _header_name(name.decode("latin-1")), found
        return None

    @staticmethod
    def _json(scope: Scope) -> bool:
        if scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
            return False
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                return b"json" in value.lower()
        return False


@functools.cache
def _template(path: str) -> re.Pattern[str]:
    """`/v1/tenants/{tenant}/campaigns/{name}` as a pattern with one group per parameter."""
    parts = re.split(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", path)
    pattern = "".join(
        f"(?P<{part}>[^/]+)" if index % 2 else re.escape(part) for index, part in enumerate(parts)
    )
    return re.compile(f"^{pattern}$")


def _header_name(lowered: str) -> str:
    return "-".join(part.capitalize() for part in lowered.split("-"))


def _again(message: Message) -> Receive:
    async def receive() -> Message:
        return message

    return receive


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a `receive` that gives it again, then what the client sends next."""
    parts: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", _again(message)  # the client went away: let the app see it
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(parts)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
