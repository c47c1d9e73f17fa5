"""A stateful stand-in for the Hostwinds cloud API, following its documented contract.

    with HostwindsStandIn(api_keys={"k"}) as hw:
        client = HostwindsClient("k", url=hw.url)

The contract (see /work/shared/NOTES.md): one endpoint, form-encoded POST, ``action=`` and the
key in ``API``; every refusal is HTTP 200 with ``[{"result": "error", "action", "message"}]``;
reads answer ``{"success": ...}``; ``add_instance`` answers before the server exists and without
its serviceid (find it by ``srvrname``); ``get_instance`` includes the root password.

Failure injection, for the client's and the controller's tests:

* ``inject(action, kind, times)``: ``"5xx"`` (HTTP 503), ``"timeout"`` (answers after
  ``timeout_delay`` seconds), ``"error200"`` (an error in a 200, nothing done), ``"done_but_error"``
  (the action takes effect, then the answer is an error: the trap for clients that retry a create);
* ``provision_seconds``: how long a new server stays ``pending`` (slow provisioning);
* ``listing_lag_seconds``: how long a new server stays out of every answer after its order was
  accepted (the listing is eventually consistent: ``get_instances`` omits it and calls naming its
  serviceid answer "not found", as the real API does for a while after ``add_instance``);
* ``rate_limit``: requests per second per key above which the API answers HTTP 429;
* ``hold(action)``: the next call of ``action`` blocks (after taking effect, when ``after=True``)
  until ``release(action)``; ``wait_held(action)`` waits until a call is blocked. The tests kill
  the operator while it waits on such a call.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs

from penguinmails.devstack.process import Startable

PATH = "/cloud/api.php"


@dataclass
class StandInInstance:
    serviceid: str
    srvrname: str
    template: str
    rid: int
    location_id: int
    keys: list[str]
    created_at: float
    provision_seconds: float
    main_ip: str
    password: str
    status: str = "pending"
    rdns: dict[str, str] = field(default_factory=dict)
    firewall: str | None = None

    def refresh(self, now: float) -> None:
        if self.status == "pending" and now - self.created_at >= self.provision_seconds:
            self.status = "active"

    def as_json(self) -> dict[str, Any]:
        active = self.status == "active"
        return {
            "serviceid": self.serviceid,
            "srvrname": self.srvrname,
            "status": self.status.capitalize(),
            "vm_state": "active" if active else ("building" if self.status == "pending" else None),
            "task_state": None if active else ("spawning" if self.status == "pending" else None),
            "main_ip": self.main_ip if active else None,
            "rdns": self.rdns.get(self.main_ip),
            "password": self.password,
            "location_id": self.location_id,
            "rid": self.rid,
            "template": self.template,
        }


@dataclass
class _Hold:
    after: bool
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)


class HostwindsStandIn(Startable):
    def __init__(
        self,
        api_keys: set[str] | None = None,
        *,
        locations: set[int] | None = None,
        plans: set[int] | None = None,
        templates: set[str] | None = None,
        firewall_profiles: set[str] | None = None,
        provision_seconds: float = 0.0,
        listing_lag_seconds: float = 0.0,
        rate_limit: float | None = None,
        timeout_delay: float = 5.0,
        ip_for: Any = None,
    ) -> None:
        self.api_keys = api_keys or {"test-key"}
        self.locations = locations or {1, 2}
        self.plans = plans or {100, 200}
        self.templates = templates or {"debian-12"}
        self.firewall_profiles = firewall_profiles or {"penguinmails-smtp"}
        self.provision_seconds = provision_seconds
        self.listing_lag_seconds = listing_lag_seconds
        self.rate_limit = rate_limit
        self.timeout_delay = timeout_delay
        self._ip_for = ip_for
        self.instances: dict[str, StandInInstance] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(100_001)
        self._faults: dict[str, deque[str]] = defaultdict(deque)
        self._holds: dict[str, _Hold] = {}
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                status, body = standin.handle(self.path, form)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client went away (timed out, or was killed)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for hold in self._holds.values():
                hold.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}{PATH}"

    # -- control -------------------------------------------------------------------------------

    def inject(self, action: str, kind: str, times: int = 1) -> None:
        assert kind in ("5xx", "timeout", "error200", "done_but_error"), kind
        with self._lock:
            self._faults[action].extend([kind] * times)

    def hold(self, action: str, *, after: bool = False) -> None:
        with self._lock:
            self._holds[action] = _Hold(after=after)

    def wait_held(self, action: str, timeout: float = 60.0) -> bool:
        with self._lock:
            hold = self._holds[action]
        return hold.arrived.wait(timeout)

    def release(self, action: str) -> None:
        with self._lock:
            hold = self._holds.pop(action, None)
        if hold is not None:
            hold.released.set()

    def live(self, srvrname_prefix: str = "") -> list[StandInInstance]:
        """Instances not terminated (what the account would be billed for)."""
        with self._lock:
            return [
                i
                for i in self.instances.values()
                if i.status != "terminated" and i.srvrname.startswith(srvrname_prefix)
            ]

    def actions(self) -> list[str]:
        with self._lock:
            return [action for action, _ in self.calls]

    # -- the API -------------------------------------------------------------------------------

    def handle(self, path: str, form: dict[str, list[str]]) -> tuple[int, Any]:
        action = (form.get("action") or [""])[0]
        key = (form.get("API") or [""])[0]
        fields = {k: (v if k.endswith("[]") else v[0]) for k, v in form.items() if k != "API"}
        with self._lock:
            self.calls.append((action, fields))
            if path != PATH:
                return 404, {"error": "not found"}
            if self.rate_limit is not None and self._over_rate(key):
                return 429, {"error": "too many requests"}
            fault = self._faults[action].popleft() if self._faults[action] else None
            hold = self._holds.get(action)
        if fault == "5xx":
            return 503, {"error": "service unavailable"}
        if fault == "timeout":
            time.sleep(self.timeout_delay)
            return 503, {"error": "late"}
        if fault == "error200":
            return 200, _error(action, "Temporary failure, please try again")
        if key not in self.api_keys:
            return 200, _error(action, "Invalid API key")
        if hold is not None and not hold.after:
            hold.arrived.set()
            hold.released.wait()
        with self._lock:
            answer = self._dispatch(action, fields)
        if hold is not None and hold.after:
            hold.arrived.set()
            hold.released.wait()
        if fault == "done_but_error":
            return 200, _error(action, "An unexpected error occurred")
        return 200, answer

    def _over_rate(self, key: str) -> bool:
        now = time.monotonic()
        recent = self._recent[key]
        while recent and now - recent[0] > 1.0:
            recent.popleft()
        recent.append(now)
        return self.rate_limit is not None and len(recent) > self.rate_limit

    def _dispatch(self, action: str, fields: dict[str, Any]) -> Any:
        now = time.monotonic()
        for instance in self.instances.values():
            instance.refresh(now)
        if action == "add_instance":
            return self._add_instance(fields, now)
        # Eventually consistent: an order is invisible until the listing catches up with it.
        listed = {
            i.serviceid: i
            for i in self.instances.values()
            if now - i.created_at >= self.listing_lag_seconds
        }
        if action in ("get_instances", "get_instance_ids"):
            return {"success": {i.serviceid: i.as_json() for i in listed.values()}}
        found = listed.get(str(fields.get("serviceid", "")))
        if action in ("get_instance", "set_rdns", "set_instance_firewall", "terminate") and (
            found is None or found.status == "terminated"
        ):
            return _error(action, f"Service not found: {fields.get('serviceid')}")
        if found is None:
            return _error(action, f"Unknown action {action}")
        instance = found
        if action == "get_instance":
            return {"success": instance.as_json()}
        if action == "set_rdns":
            if instance.status != "active" or fields.get("ip") != instance.main_ip:
                return _error(action, f"IP {fields.get('ip')} is not assigned to this service")
            instance.rdns[str(fields["ip"])] = str(fields.get("rdns", ""))
            return {"success": "rDNS updated"}
        if action == "set_instance_firewall":
            name = str(fields.get("name", ""))
            if name not in self.firewall_profiles:
                return _error(action, f"Firewall profile not found: {name}")
            instance.firewall = name
            return {"success": "Firewall updated"}
        if action == "terminate":
            instance.status = "terminated"
            return {"success": "Service terminated"}
        return _error(action, f"Unknown action {action}")

    def _add_instance(self, fields: dict[str, Any], now: float) -> Any:
        action = "add_instance"
        try:
            location = int(fields.get("location_id", ""))
            rid = int(fields.get("rid", ""))
        except ValueError:
            return _error(action, "location_id and rid must be numbers")
        if location not in self.locations:
            return _error(action, f"Invalid location_id {location}")
        if rid not in self.plans:
            return _error(action, f"Invalid rid {rid}: no such product")
        template = str(fields.get("template", ""))
        if template not in self.templates:
            return _error(action, f"Invalid template {template}")
        srvrname = str(fields.get("srvrname", ""))
        if not srvrname:
            return _error(action, "srvrname is required")
        serviceid = str(next(self._ids))
        n = int(serviceid) - 100_000
        ip = self._ip_for(n) if self._ip_for else f"198.51.{n // 250}.{n % 250 + 1}"
        self.instances[serviceid] = StandInInstance(
            serviceid=serviceid,
            srvrname=srvrname,
            template=template,
            rid=rid,
            location_id=location,
            keys=list(fields.get("keys[]", [])),
            created_at=now,
            provision_seconds=self.provision_seconds,
            main_ip=ip,
            password=secrets.token_urlsafe(16),
        )
        return {"success": "Your order has been placed"}


def _error(action: str, message: str) -> list[dict[str, str]]:
    return [{"result": "error", "action": action, "message": message}]
