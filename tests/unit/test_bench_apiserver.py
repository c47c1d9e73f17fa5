"""The bench's reading of the API server's request counters: what it attributes to whom."""

from __future__ import annotations

from penguinmails.bench.apiserver import breakdown, parse, writes


def request(verb: str, resource: str, sub: str, scope: str, value: int, code: str = "200") -> str:
    labels = (
        f'code="{code}",component="apiserver",dry_run="",group="",resource="{resource}",'
        f'scope="{scope}",subresource="{sub}",verb="{verb}",version="v1"'
    )
    return f"apiserver_request_total{{{labels}}} {value}"


def client(schema: str, value: int) -> str:
    labels = f'flow_schema="{schema}",priority_level="workload-high"'
    return f"apiserver_flowcontrol_dispatched_requests_total{{{labels}}} {value}"


def exposition(*, status_puts: int, conflicts: int, leases: int, exempt: int, kcm: int) -> str:
    return "\n".join(
        [
            "# TYPE apiserver_request_total counter",
            request("PUT", "deployments", "status", "resource", status_puts),
            request("PUT", "deployments", "status", "resource", conflicts, code="409"),
            request("PUT", "leases", "", "resource", leases),
            request("WATCH", "pods", "", "cluster", 2, code="0"),
            "# TYPE apiserver_flowcontrol_dispatched_requests_total counter",
            client("exempt", exempt),
            client("kube-system-service-accounts", kcm),
            "",
        ]
    )


BEFORE = exposition(status_puts=10, conflicts=0, leases=5, exempt=3, kcm=14)
AFTER = exposition(status_puts=40, conflicts=2, leases=11, exempt=9, kcm=46)


def test_a_window_counts_by_request_and_by_client() -> None:
    window = parse(AFTER) - parse(BEFORE)

    # Response codes are summed; what did not change in the window is not there.
    assert dict(window.requests) == {
        "PUT deployments/status resource": 32,
        "PUT leases resource": 6,
    }
    assert dict(window.clients) == {"exempt": 6, "kube-system-service-accounts": 32}
    assert window.rate(2.0) == 19.0
    assert window.by_verb(2.0) == {"PUT": 19.0}


def test_only_writes_other_than_leases_keep_the_control_plane_unsettled() -> None:
    assert writes(parse(AFTER) - parse(BEFORE)) == 32

    heartbeats = exposition(status_puts=10, conflicts=0, leases=11, exempt=9, kcm=14)
    assert writes(parse(heartbeats) - parse(BEFORE)) == 0


def test_the_breakdown_names_the_busiest_request_and_client() -> None:
    lines = breakdown(parse(AFTER) - parse(BEFORE), seconds=2.0)
    assert lines[0].split() == ["19.00", "requests/s:", "PUT=19.00"]
    assert "kube-system-service-accounts 16.00/s, exempt 3.00/s" in lines[1]
    assert lines[2].endswith("PUT deployments/status resource 16.00/s, PUT leases resource 3.00/s")
