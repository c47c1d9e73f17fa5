"""An async client of the Hostwinds cloud API, as its documentation describes it.

Every call is a form-encoded POST to one endpoint with ``action=<name>`` and the key in ``API``.
Failures come back as HTTP 200 with ``[{"result": "error", "action": .., "message": ..}]``;
reads answer ``{"success": ...}``. ``add_instance`` answers before the server exists and without
its serviceid: the caller finds it again by its ``srvrname``.

Behaviour towards the API:

* requests are spaced to ``requests_per_second`` (Hostwinds tolerates about 2/s per key);
* transient failures (timeouts, lost connections, HTTP 429 and 5xx) are retried with exponential
  backoff, client errors (other 4xx, errors in a 200) never: repeating them cannot help;
* calls that are not idempotent (``add_instance``) are sent once, even on a timeout: a timed-out
  create may have created the server, and the caller looks it up by name before trying again;
* after ``failure_threshold`` transient failures in a row the circuit opens: calls fail at once
  for ``open_seconds``, then one call is let through to probe the API.

The API key and the root password that ``get_instance`` answers with are never logged, never
put in an exception message and never returned: ``Instance`` has no field for the password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

DEFAULT_URL = "https://clients.hostwinds.com/cloud/api.php"
GONE_STATES = frozenset({"terminated", "cancelled", "canceled", "deleted"})


class HostwindsError(Exception):
    """Base of the client's errors; the message is safe to show (no key, no password)."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"Hostwinds {action}: {message}")
        self.action = action
        self.detail = message


class HostwindsRejectedError(HostwindsError):
    """The API refused the request (an error in a 200, or a 4xx): retrying will not help."""


class HostwindsNotFoundError(HostwindsRejectedError):
    """The serviceid is unknown to the account."""


class HostwindsUnavailableError(HostwindsError):
    """Transient failures outlasted the retries, or the circuit is open: try again later."""


@dataclass(frozen=True)
class Instance:
    """The part of a Hostwinds instance the operator uses (never the root password)."""

    serviceid: str
    srvrname: str
    status: str
    main_ip: str | None
    vm_state: str | None = None
    task_state: str | None = None
    rdns: str | None = None

    @property
    def gone(self) -> bool:
        return self.status in GONE_STATES

    @property
    def ready(self) -> bool:
        """Built, running and addressable."""
        return (
            self.status == "active"
            and (self.vm_state in (None, "active"))
            and not self.task_state
            and bool(self.main_ip)
        )

    @classmethod
    def parse(cls, raw: Mapping[str, Any], serviceid: str | None = None) -> Instance:
        # Only named fields are copied: the answer also carries the root password, which must
        # not travel further than this function.
        ident = raw.get("serviceid") or raw.get("id") or serviceid
        return cls(
            serviceid=str(ident),
            srvrname=str(raw.get("srvrname") or raw.get("name") or ""),
            status=str(raw.get("status") or "").lower(),
            main_ip=str(raw["main_ip"]) if raw.get("main_ip") else None,
            vm_state=str(raw["vm_state"]).lower() if raw.get("vm_state") else None,
            task_state=str(raw["task_state"]).lower() if raw.get("task_state") else None,
            rdns=str(raw["rdns"]) if raw.get("rdns") else None,
        )


class Throttle:
    """Spaces request starts at least 1/rate seconds apart (one per client, i.e. per key)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = self._clock()
            if self._next > now:
                await asyncio.sleep(self._next - now)
                now = self._clock()
            self._next = max(now, self._next) + self._interval


class CircuitBreaker:
    """Opens after ``threshold`` consecutive transient failures; half-opens after a pause."""

    def __init__(
        self,
        threshold: int = 5,
        open_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        if self._opened_at is None:
            return False
        # Past the pause it is half-open: the next call probes the API.
        return self._clock() - self._opened_at < self.open_seconds

    def retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.open_seconds - (self._clock() - self._opened_at))

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self) -> None:
        self._failures += 1
        if self._failures >= self.threshold:
            self._opened_at = self._clock()


def _error_message(payload: Any) -> str | None:
    """The message of an error answer (a list or a single object with result: error)."""
    items = payload if isinstance(payload, list) else [payload]
    for item in items:
        if isinstance(item, Mapping) and str(item.get("result", "")).lower() == "error":
            return str(item.get("message") or "unspecified error")
    return None


class HostwindsClient:
    """One API key's view of the Hostwinds cloud API."""

    def __init__(
        self,
        api_key: str,
        *,
        url: str = DEFAULT_URL,
        requests_per_second: float = 2.0,
        timeout: float = 30.0,
        retries: int = 4,
        backoff_base: float = 1.0,
        breaker: CircuitBreaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key
        self._url = url
        self._retries = retries
        self._backoff_base = backoff_base
        self.throttle = Throttle(requests_per_second)
        self.breaker = breaker or CircuitBreaker()
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    def __repr__(self) -> str:  # never show the key
        return f"HostwindsClient(url={self._url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, action: str, *, idempotent: bool = True, **fields: Any) -> Any:
        """POST one action; the ``success`` value of the answer. Raises HostwindsError."""
        form: list[tuple[str, str]] = [("action", action), ("API", self._api_key)]
        for key, value in fields.items():
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                form.extend((f"{key}[]", str(v)) for v in value)
            else:
                form.append((key, str(value)))
        attempts = 1 + (self._retries if idempotent else 0)
        last = "no attempt made"
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._backoff_base * 2 ** (attempt - 1))
            if self.breaker.is_open:
                raise HostwindsUnavailableError(
                    action,
                    f"circuit open after repeated failures ({last}); "
                    f"next attempt in {self.breaker.retry_in():.0f}s",
                )
            await self.throttle.wait()
            try:
                response = await self._http.post(self._url, data=dict(_group(form)))
            except httpx.TransportError as error:  # timeouts, refused or dropped connections
                last = f"{type(error).__name__}"
                self.breaker.failure()
                log.info("Hostwinds %s: transient %s (attempt %d)", action, last, attempt + 1)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                self.breaker.failure()
                log.info("Hostwinds %s: transient %s (attempt %d)", action, last, attempt + 1)
                continue
            self.breaker.success()  # the API answered: whatever it said, it is up
            if response.status_code >= 400:
                raise HostwindsRejectedError(action, f"HTTP {response.status_code}")
            try:
                payload = response.json()
            except ValueError:
                raise HostwindsRejectedError(action, "the answer is not JSON") from None
            message = _error_message(payload)
            if message is not None:
                if "not found" in message.lower() or "invalid serviceid" in message.lower():
                    raise HostwindsNotFoundError(action, message)
                raise HostwindsRejectedError(action, message)
            if isinstance(payload, Mapping) and "success" in payload:
                return payload["success"]
            return payload
        if not idempotent:
            last += "; not retried: the request may have taken effect"
        raise HostwindsUnavailableError(action, last)

    # -- actions -------------------------------------------------------------------------------

    async def add_instance(
        self, *, template: str, rid: int, location_id: int, srvrname: str, keys: Sequence[str]
    ) -> None:
        """Order a server. Answers before it exists: find it with ``find_by_name``."""
        await self.call(
            "add_instance",
            idempotent=False,
            template=template,
            rid=rid,
            location_id=location_id,
            srvrname=srvrname,
            keys=list(keys),
            qty=1,
            billingcycle="monthly",
        )

    async def get_instances(self) -> list[Instance]:
        answer = await self.call("get_instances")
        if isinstance(answer, Mapping):
            return [
                Instance.parse(raw, serviceid=str(key))
                for key, raw in answer.items()
                if isinstance(raw, Mapping)
            ]
        if isinstance(answer, list):
            return [Instance.parse(raw) for raw in answer if isinstance(raw, Mapping)]
        return []

    async def find_by_name(self, srvrname: str) -> list[Instance]:
        """Instances named ``srvrname`` that are not terminated."""
        return [i for i in await self.get_instances() if i.srvrname == srvrname and not i.gone]

    async def get_instance(self, serviceid: str) -> Instance | None:
        """The instance, or None when the account does not know the serviceid."""
        try:
            answer = await self.call("get_instance", serviceid=serviceid)
        except HostwindsNotFoundError:
            return None
        if not isinstance(answer, Mapping):
            raise HostwindsRejectedError("get_instance", "unexpected answer")
        return Instance.parse(answer, serviceid=serviceid)

    async def set_rdns(self, serviceid: str, ip: str, rdns: str) -> None:
        await self.call("set_rdns", serviceid=serviceid, ip=ip, rdns=rdns)

    async def set_instance_firewall(self, serviceid: str, name: str) -> None:
        await self.call("set_instance_firewall", serviceid=serviceid, name=name)

    async def terminate(self, serviceid: str) -> None:
        await self.call("terminate", serviceid=serviceid)


def _group(form: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """httpx wants repeated form keys as one list value."""
    grouped: dict[str, str | list[str]] = {}
    for key, value in form:
        if key in grouped:
            existing = grouped[key]
            grouped[key] = [*(existing if isinstance(existing, list) else [existing]), value]
        elif key.endswith("[]"):
            grouped[key] = [value]
        else:
            grouped[key] = value
    return grouped
