"""What the API server served in a window, from its own `/metrics`, broken down so that a bench
can say whose requests they were.

`apiserver_request_total` has the verb, resource, subresource and scope of every request but
not the client; API Priority and Fairness classifies every request by client into a flow schema
(`apiserver_flowcontrol_dispatched_requests_total{flow_schema}`): `exempt` is `system:masters`
(the operator and the bench here, which use the admin identity), `kube-system-service-accounts`
the controller-manager's controllers (each with its own ServiceAccount), `kube-scheduler`,
`system-nodes`, `system-leader-election` and so on. Together, and with a window in which the
operator is stopped and the same objects remain, they attribute every request.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from kubernetes import client

from penguinmails.bench.measure import samples


@dataclass
class Served:
    """Request counts since the API server started (or over a window, once subtracted)."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    """By "VERB resource[/subresource] scope"."""
    clients: collections.Counter[str] = field(default_factory=collections.Counter)
    """By flow schema (the client's class)."""

    def __sub__(self, earlier: Served) -> Served:
        return Served(self.requests - earlier.requests, self.clients - earlier.clients)

    def rate(self, seconds: float) -> float:
        return sum(self.requests.values()) / seconds

    def by_verb(self, seconds: float) -> dict[str, float]:
        rates: dict[str, float] = collections.defaultdict(float)
        for what, n in self.requests.items():
            rates[what.split(" ", 1)[0]] += n / seconds
        return dict(rates)


def served(api_client: client.ApiClient) -> Served:
    """The API server's request counters now."""
    method, url, headers, body, post = api_client.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    response = api_client.call_api(method, url, headers, body, post, _request_timeout=60)
    response.read()
    return parse(response.data.decode())


def parse(exposition: str) -> Served:
    """The request counters of an API server's `/metrics` text."""
    counts = Served()
    for sample in samples(exposition):
        labels = sample.labels
        if sample.name == "apiserver_request_total":
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            what = f"{labels['verb']} {labels.get('resource') or '-'}{sub} {labels.get('scope')}"
            counts.requests[what] += int(sample.value)
        elif sample.name == "apiserver_flowcontrol_dispatched_requests_total":
            counts.clients[labels["flow_schema"]] += int(sample.value)
    return counts


WRITES = ("POST", "PUT", "PATCH", "DELETE")
SETTLE_WINDOW_SECONDS = 15.0


def writes(window: Served) -> int:
    """Writes in a window, leases (every component's heartbeat) aside."""
    return sum(
        n
        for what, n in window.requests.items()
        if what.split(" ", 1)[0] in WRITES and " leases " not in what
    )


def settle(api_client: client.ApiClient, timeout: float = 900.0) -> float:
    """Wait until the control plane has caught up with what was just created (the
    controller-manager's controllers write each new Deployment's ReplicaSet and status, each
    namespace's ServiceAccount and ConfigMap, long after the objects are Ready on a loaded
    machine): two windows in a row without a write. Returns the seconds it took, or waited
    (`timeout`) if writes went on: an idle window measured before that counts the creation's
    echoes, not idleness."""
    started = time.perf_counter()
    quiet_windows = 0
    before = served(api_client)
    while quiet_windows < 2 and time.perf_counter() - started < timeout:
        time.sleep(SETTLE_WINDOW_SECONDS)
        now = served(api_client)
        quiet_windows = quiet_windows + 1 if writes(now - before) == 0 else 0
        before = now
    return time.perf_counter() - started


def breakdown(window: Served, seconds: float, top: int = 10) -> list[str]:
    """Lines saying what was served per second: by verb, by client class, busiest requests."""
    verbs = window.by_verb(seconds)
    lines = [
        f"{window.rate(seconds):8.2f} requests/s: "
        + " ".join(f"{v}={r:.2f}" for v, r in sorted(verbs.items(), key=lambda i: -i[1]) if r),
        "    by client (flow schema): "
        + ", ".join(
            f"{name} {n / seconds:.2f}/s"
            for name, n in sorted(window.clients.items(), key=lambda i: -i[1])
            if n
        ),
        "    busiest: "
        + ", ".join(
            f"{what} {n / seconds:.2f}/s"
            for what, n in sorted(window.requests.items(), key=lambda i: -i[1])[:top]
            if n
        ),
    ]
    return lines
