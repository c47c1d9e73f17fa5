"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

Every replica runs this before it starts kopf: one holds the Lease and reconciles; the others
wait, watching the Lease. Why a Lease rather than kopf's peering: kopf lets operators of equal
priority run side by side (it only warns), so it is not an election; a Lease is the API's own
primitive, needs no CRD, and its RBAC is one namespaced Role.

- Expiry is judged on the standby's own clock: a holder is gone when its `renewTime` has not
  changed for `leaseDurationSeconds` since this replica last saw it change (no clock skew
  between nodes matters). Takeover after the leader dies therefore takes at most the lease
  duration plus one retry period.
- The leader renews every retry period; if it cannot renew for the renew deadline (shorter than
  the lease duration), it exits at once, before anyone else may take over, and the Deployment
  restarts it as a standby. A graceful stop releases the Lease so the standby takes over now.
- While waiting, a replica answers the liveness endpoint itself (kopf's is not running yet), so
  a standby is not restarted for being a standby.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.common.settings import KubeClientSettings
from penguinmails.operator.kube import load_config

log = logging.getLogger(__name__)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError as error:
        raise ValueError(f"{name}={raw!r} is not a number of seconds, e.g. {default}") from error


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    """This replica's name in the Lease (PM_LEADER_IDENTITY, the chart sets the pod name)."""
    duration_seconds: float
    """How long a Lease not renewed stays held (PM_LEADER_LEASE_SECONDS)."""
    renew_deadline_seconds: float
    """How long the leader keeps reconciling without a successful renewal
    (PM_LEADER_RENEW_DEADLINE_SECONDS); below the duration, so it stops before a takeover."""
    retry_seconds: float
    """How often the leader renews and a standby looks (PM_LEADER_RETRY_SECONDS)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LeaseSettings | None:
        """None unless PM_LEADER_LEASE (`namespace/name`) is set: then elections are off."""
        env = os.environ if environ is None else environ
        lease = env.get("PM_LEADER_LEASE", "")
        if not lease:
            return None
        namespace, _, name = lease.partition("/")
        if not namespace or not name:
            raise ValueError(
                f"PM_LEADER_LEASE={lease!r}: set it to namespace/name, e.g. "
                "penguinmails/penguinmails-operator"
            )
        settings = cls(
            namespace=namespace,
            name=name,
            identity=env.get("PM_LEADER_IDENTITY") or f"{socket.gethostname()}-{os.getpid()}",
            duration_seconds=_float(env, "PM_LEADER_LEASE_SECONDS", 15.0),
            renew_deadline_seconds=_float(env, "PM_LEADER_RENEW_DEADLINE_SECONDS", 10.0),
            retry_seconds=_float(env, "PM_LEADER_RETRY_SECONDS", 2.0),
        )
        if not settings.retry_seconds < settings.renew_deadline_seconds < settings.duration_seconds:
            raise ValueError(
                "leader election needs PM_LEADER_RETRY_SECONDS < PM_LEADER_RENEW_DEADLINE_SECONDS"
                " < PM_LEADER_LEASE_SECONDS (defaults 2 < 10 < 15)"
            )
        return settings


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    def __init__(self, settings: LeaseSettings, api: client.CoordinationV1Api | None = None):
        self.settings = settings
        if api is None:
            # Each call must fail well within a retry period, never hang the renewal.
            timeouts = KubeClientSettings(
                connect_timeout_seconds=settings.retry_seconds,
                read_timeout_seconds=settings.retry_seconds,
                retries=0,
            )
            api = client.CoordinationV1Api(load_config(timeouts))
        self.api = api
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    def _lease_body(self, transitions: int) -> client.V1Lease:
        now = _now()
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.settings.name),
            spec=client.V1LeaseSpec(
                holder_identity=self.settings.identity,
                lease_duration_seconds=int(self.settings.duration_seconds),
                acquire_time=now,
                renew_time=now,
                lease_transitions=transitions,
            ),
        )

    def try_acquire_or_renew(self) -> bool:
        """One look at the Lease: True when this replica holds it afterwards."""
        s = self.settings
        try:
            lease = self.api.read_namespaced_lease(s.name, s.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            try:
                self.api.create_namespaced_lease(s.namespace, self._lease_body(0))
            except ApiException as create_error:
                if create_error.status == 409:
                    return False  # another replica created it first
                raise
            return True
        spec = lease.spec
        holder = spec.holder_identity or ""
        if holder != s.identity:
            seen = (holder, spec.renew_time, spec.lease_duration_seconds)
            if seen != self._observed:
                self._observed, self._observed_at = seen, time.monotonic()
            duration = spec.lease_duration_seconds or s.duration_seconds
            if holder and time.monotonic() - self._observed_at < duration:
                return False
            fresh = self._lease_body((spec.lease_transitions or 0) + 1)
            spec.holder_identity = s.identity
            spec.acquire_time = fresh.spec.acquire_time
            spec.lease_transitions = fresh.spec.lease_transitions
        spec.renew_time = _now()
        spec.lease_duration_seconds = int(s.duration_seconds)
        try:
            # resourceVersion makes this conditional: of two replicas racing, one gets 409.
            self.api.replace_namespaced_lease(s.name, s.namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def acquire(self) -> None:
        """Block until this replica holds the Lease."""
        s = self.settings
        log.info("waiting for leadership of Lease %s/%s as %s", s.namespace, s.name, s.identity)
        while True:
            try:
                if self.try_acquire_or_renew():
                    log.info("became leader (Lease %s/%s) as %s", s.namespace, s.name, s.identity)
                    return
            except Exception as error:
                log.warning("leader election: %s: %s", type(error).__name__, error)
            time.sleep(s.retry_seconds)

    def keep_renewing(self) -> threading.Thread:
        """Renew in a thread; exit the process when leadership cannot be kept."""
        thread = threading.Thread(target=self._renew_loop, name="leader-renew", daemon=True)
        thread.start()
        return thread

    def _renew_loop(self) -> None:
        s = self.settings
        last_renewed = time.monotonic()
        while True:
            time.sleep(s.retry_seconds)
            try:
                if self.try_acquire_or_renew():
                    last_renewed = time.monotonic()
                    continue
                reason = "another replica holds the Lease"
            except Exception as error:
                reason = f"{type(error).__name__}: {error}"
            if time.monotonic() - last_renewed >= s.renew_deadline_seconds or reason.startswith(
                "another"
            ):
                # Stop reconciling before the Lease can expire for the others: exit at once
                # (kopf cannot be paused safely); the Deployment restarts this pod as a standby.
                log.error("lost leadership (%s); exiting", reason)
                logging.shutdown()
                os._exit(1)
            log.warning("Lease not renewed (%s); retrying", reason)

    def release(self) -> None:
        """Give the Lease up at a graceful stop, so a standby takes over without waiting."""
        s = self.settings
        try:
            lease = self.api.read_namespaced_lease(s.name, s.namespace)
            if lease.spec.holder_identity != s.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = _now()
            self.api.replace_namespaced_lease(s.name, s.namespace, lease)
            log.info("released Lease %s/%s", s.namespace, s.name)
        except Exception as error:
            log.warning("could not release the Lease: %s", error)


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"standby": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class StandbyLiveness:
    """Answers the liveness URL while kopf (which serves it once leading) is not running."""

    def __init__(self, url: str | None) -> None:
        self._server: ThreadingHTTPServer | None = None
        if url:
            parts = urlsplit(url)
            address = (parts.hostname or "0.0.0.0", parts.port or 80)  # noqa: S104 - kopf's too
            self._server = ThreadingHTTPServer(address, _Healthy)
            threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
