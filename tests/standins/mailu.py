"""A stand-in for MailU's admin REST API (MailU runs in Docker, which is not available here).

Follows the documented contract (MailU's core/admin/mailu/api/v1: domain.py, user.py, relay.py):
base ``/api/v1``, raw token in ``Authorization``; 401 without it, 403 with a wrong one;
``{"code", "message"}`` on errors. ``/domain`` (GET list, POST ``name``/``comment``: 400 for an
invalid name, 409 for a name in use as a domain or relayed domain), ``/domain/{d}`` (GET, with
``dns_dkim`` once keys exist; DELETE, its users with it; 404 unknown), ``POST /domain/{d}/dkim``;
``/user`` (GET list, without passwords; POST ``email``, ``raw_password`` and the optional
fields such as ``comment``, ``forward_enabled``, ``forward_destination`` (a list),
``forward_keep``: 400 invalid address, 404 when its domain does not exist, 409 duplicate),
``/user/{email}`` (GET, PATCH the same fields, DELETE; 404 unknown); ``/relay`` (GET list, POST
``name``/``smtp``/``comment``: 400, 409 as for domains), ``/relay/{name}`` (GET, PATCH ``smtp``
and ``comment``, DELETE; 404 unknown). Passwords are kept aside (``_password``) for the tests.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

PREFIX = "/api/v1"


class MailuAdminStandIn:
    """``token`` may be a callable: the tests read it from the Secret the operator generated."""

    def __init__(self, token: str | Callable[[], str]) -> None:
        self.token = token
        self.domains: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.relays: dict[str, dict[str, Any]] = {}
        self.failures: dict[tuple[str, str], tuple[int, str]] = {}
        """(method, path under /api/v1) → (status, message) answered instead, as MailU's
        admin does when its database fails (500 with the same envelope)."""
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def __enter__(self) -> MailuAdminStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                status, answer = standin.handle(
                    method, self.path, self.headers.get("Authorization"), body
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def handle(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((method, path))
            if auth is None:
                return 401, {"code": 401, "message": "Authorization header missing"}
            expected = self.token() if callable(self.token) else self.token
            if auth != expected:
                return 403, {"code": 403, "message": "Invalid token"}
            if not path.startswith(PREFIX):
                return 404, {"code": 404, "message": "Not found"}
            failure = self.failures.get((method, path[len(PREFIX) :]))
            if failure is not None:
                return failure[0], {"code": failure[0], "message": failure[1]}
            parts = path[len(PREFIX) :].strip("/").split("/")
            if parts[0] == "domain":
                return self._domain(method, parts[1:], body)
            if parts[0] == "user":
                return self._user(method, parts[1:], body)
            if parts[0] == "relay":
                return self._relay(method, parts[1:], body)
            return 404, {"code": 404, "message": "Not found"}

    def _in_use(self, name: str) -> bool:
        return name in self.domains or name in self.relays

    def _domain(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if not rest:
            if method == "GET":
                return 200, list(self.domains.values())
            if method != "POST":
                return 405, {"code": 405, "message": "Method not allowed"}
            name = str((body or {}).get("name", ""))
            if not _DOMAIN.match(name):
                return 400, {"code": 400, "message": f"Domain {name} is not a valid domain"}
            if self._in_use(name):
                return 409, {"code": 409, "message": f"Duplicate domain name {name}"}
            self.domains[name] = {"name": name, "dns_mx": f"{name}. 600 IN MX 10 mx.{name}."}
            if "comment" in body:
                self.domains[name]["comment"] = str(body["comment"])
            return 200, {"code": 200, "message": f"Domain {name} has been created"}
        domain = self.domains.get(rest[0])
        if domain is None:
            return 404, {"code": 404, "message": f"Domain {rest[0]} does not exist"}
        if len(rest) == 2 and rest[1] == "dkim" and method == "POST":
            key = secrets.token_urlsafe(48)
            domain["dns_dkim"] = f'dkim._domainkey.{rest[0]}. 600 IN TXT "v=DKIM1; k=rsa; p={key}"'
            return 200, {"code": 200, "message": "DKIM keys generated"}
        if len(rest) == 1 and method == "DELETE":
            del self.domains[rest[0]]
            for email in [e for e in self.users if e.rsplit("@", 1)[-1] == rest[0]]:
                del self.users[email]
            return 200, {"code": 200, "message": f"Domain {rest[0]} has been deleted"}
        if len(rest) == 1 and method == "GET":
            return 200, domain
        return 405, {"code": 405, "message": "Method not allowed"}

    def _user(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if not rest and method == "GET":
            return 200, [_public(u) for u in self.users.values()]
        if not rest and method == "POST":
            email = str((body or {}).get("email", "")).lower()
            if not _EMAIL.match(email):
                return 400, {"code": 400, "message": f"{email} is not a valid email address"}
            if not body.get("raw_password"):
                return 400, {"code": 400, "message": "raw_password is required"}
            domain = email.rsplit("@", 1)[-1]
            if domain not in self.domains:
                return 404, {"code": 404, "message": f"Domain {domain} does not exist"}
            if email in self.users:
                return 409, {"code": 409, "message": f"User {email} already exists"}
            user = {"email": email, "enabled": True, "forward_enabled": False}
            user.update({k: body[k] for k in USER_FIELDS if k in body})
            user["_password"] = body["raw_password"]
            self.users[email] = user
            return 200, {"code": 200, "message": f"User {email} has been created"}
        if len(rest) != 1:
            return 405, {"code": 405, "message": "Method not allowed"}
        email = rest[0].lower()
        found = self.users.get(email)
        if found is None:
            return 404, {"code": 404, "message": f"User {email} cannot be found"}
        if method == "GET":
            return 200, _public(found)
        if method == "PATCH":
            found.update({k: body[k] for k in USER_FIELDS if k in (body or {})})
            if (body or {}).get("raw_password"):
                found["_password"] = body["raw_password"]
            return 200, {"code": 200, "message": f"User {email} has been updated"}
        if method == "DELETE":
            del self.users[email]
            return 200, {"code": 200, "message": f"User {email} has been deleted"}
        return 405, {"code": 405, "message": "Method not allowed"}

    def _relay(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if not rest and method == "GET":
            return 200, list(self.relays.values())
        if not rest and method == "POST":
            name = str((body or {}).get("name", ""))
            if not _DOMAIN.match(name):
                return 400, {"code": 400, "message": f"Relayed domain {name} is not a valid domain"}
            if self._in_use(name):
                return 409, {"code": 409, "message": f"Duplicate domain {name}"}
            self.relays[name] = {"name": name}
            self.relays[name].update({k: str(body[k]) for k in ("smtp", "comment") if k in body})
            return 200, {"code": 200, "message": f"Relayed domain {name} has been created"}
        if len(rest) != 1:
            return 405, {"code": 405, "message": "Method not allowed"}
        found = self.relays.get(rest[0])
        if found is None:
            return 404, {"code": 404, "message": f"Relayed domain {rest[0]} cannot be found"}
        if method == "GET":
            return 200, found
        if method == "PATCH":
            found.update({k: str(body[k]) for k in ("smtp", "comment") if k in (body or {})})
            return 200, {"code": 200, "message": f"Relayed domain {rest[0]} has been updated"}
        if method == "DELETE":
            del self.relays[rest[0]]
            return 200, {"code": 200, "message": f"Relayed domain {rest[0]} has been deleted"}
        return 405, {"code": 405, "message": "Method not allowed"}


USER_FIELDS = (
    "comment",
    "enabled",
    "quota_bytes",
    "enable_imap",
    "forward_enabled",
    "forward_destination",
    "forward_keep",
    "displayed_name",
)
"""The user fields the stand-in keeps (a subset of MailU's UserCreate/UserUpdate)."""

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]+@(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _public(user: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in user.items() if not k.startswith("_")}
