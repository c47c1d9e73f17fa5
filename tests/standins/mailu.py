"""A stand-in for MailU's admin REST API (MailU runs in Docker, which is not available here).

Follows the documented contract: base ``/api/v1``, raw token in ``Authorization``; 401 without
it, 403 with a wrong one; ``{"code", "message"}`` on errors; ``/domain`` (GET, POST),
``/domain/{d}`` (GET, with ``dns_dkim`` once keys exist), ``POST /domain/{d}/dkim``, ``/user``
(POST with ``email`` and ``raw_password``), ``/user/{email}`` (GET).
"""

from __future__ import annotations

import json
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
            parts = path[len(PREFIX) :].strip("/").split("/")
            if parts[0] == "domain":
                return self._domain(method, parts[1:], body)
            if parts[0] == "user":
                return self._user(method, parts[1:], body)
            return 404, {"code": 404, "message": "Not found"}

    def _domain(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if not rest:
            if method == "GET":
                return 200, list(self.domains.values())
            name = str((body or {}).get("name", ""))
            if not name:
                return 400, {"code": 400, "message": "name is required"}
            if name in self.domains:
                return 409, {"code": 409, "message": "Domain already exists"}
            self.domains[name] = {"name": name, "dns_mx": f"{name}. 600 IN MX 10 mx.{name}."}
            return 200, {"code": 200, "message": "Domain created"}
        domain = self.domains.get(rest[0])
        if domain is None:
            return 404, {"code": 404, "message": "Domain not found"}
        if len(rest) == 2 and rest[1] == "dkim" and method == "POST":
            key = secrets.token_urlsafe(48)
            domain["dns_dkim"] = f'dkim._domainkey.{rest[0]}. 600 IN TXT "v=DKIM1; k=rsa; p={key}"'
            return 200, {"code": 200, "message": "DKIM keys generated"}
        return 200, domain

    def _user(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if not rest and method == "POST":
            email = str((body or {}).get("email", ""))
            if not email or not (body or {}).get("raw_password"):
                return 400, {"code": 400, "message": "email and raw_password are required"}
            if email.split("@")[-1] not in self.domains:
                return 409, {"code": 409, "message": "Domain does not exist"}
            self.users[email] = {"email": email, "enabled": bool(body.get("enabled", True))}
            self.users[email]["_password"] = body["raw_password"]
            return 200, {"code": 200, "message": "User created"}
        if rest and method == "GET":
            user = self.users.get(rest[0])
            if user is None:
                return 404, {"code": 404, "message": "User not found"}
            return 200, {k: v for k, v in user.items() if not k.startswith("_")}
        return 405, {"code": 405, "message": "Method not allowed"}
