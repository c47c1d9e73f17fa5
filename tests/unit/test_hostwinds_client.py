"""The Hostwinds client against the stand-in that follows the documented contract."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from penguinmails.operator.providers.hostwinds_api import (
    CircuitBreaker,
    HostwindsClient,
    HostwindsRejectedError,
    HostwindsUnavailableError,
)
from tests.standins.hostwinds import HostwindsStandIn

KEY = "test-key"


@pytest.fixture
def standin() -> Iterator[HostwindsStandIn]:
    with HostwindsStandIn({KEY}, timeout_delay=1.0) as server:
        yield server


def make_client(url: str, **kwargs: object) -> HostwindsClient:
    options: dict[str, object] = {
        "url": url,
        "requests_per_second": 1000.0,
        "timeout": 0.5,
        "backoff_base": 0.01,
    }
    options.update(kwargs)
    return HostwindsClient(KEY, **options)  # type: ignore[arg-type]


async def order(client: HostwindsClient, name: str = "pm-a") -> None:
    await client.add_instance(
        template="debian-12", rid=100, location_id=1, srvrname=name, keys=["ssh-ed25519 AAA"]
    )


async def test_create_is_found_by_name_and_polled_until_active(standin: HostwindsStandIn) -> None:
    standin.provision_seconds = 0.3
    client = make_client(standin.url)
    await order(client)
    (pending,) = await client.find_by_name("pm-a")
    assert not pending.ready and pending.main_ip is None
    assert standin.calls[0][1]["keys[]"] == ["ssh-ed25519 AAA"]  # form-encoded list
    instance = pending
    for _ in range(100):
        polled = await client.get_instance(pending.serviceid)
        assert polled is not None
        instance = polled
        if instance.ready:
            break
        await asyncio.sleep(0.02)
    assert instance.ready and instance.main_ip
    await client.set_rdns(instance.serviceid, instance.main_ip, "mx1.example.com")
    await client.set_instance_firewall(instance.serviceid, "penguinmails-smtp")
    assert standin.instances[instance.serviceid].rdns == {instance.main_ip: "mx1.example.com"}
    await client.terminate(instance.serviceid)
    assert await client.find_by_name("pm-a") == []
    assert await client.get_instance(instance.serviceid) is None
    await client.aclose()


async def test_root_password_never_leaves_the_client(
    standin: HostwindsStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(standin.url)
    await order(client)
    (instance,) = await client.get_instances()
    password = next(iter(standin.instances.values())).password
    fetched = await client.get_instance(instance.serviceid)
    assert password not in repr(fetched) and password not in repr(instance)
    assert password not in caplog.text and KEY not in caplog.text
    assert KEY not in repr(client)
    await client.aclose()


async def test_error_in_a_200_is_a_rejection_and_not_retried(standin: HostwindsStandIn) -> None:
    client = make_client(standin.url)
    with pytest.raises(HostwindsRejectedError, match="Invalid location_id 99"):
        await client.add_instance(
            template="debian-12", rid=100, location_id=99, srvrname="x", keys=[]
        )
    standin.inject("get_instances", "error200")
    with pytest.raises(HostwindsRejectedError, match="Temporary failure"):
        await client.get_instances()
    assert standin.actions() == ["add_instance", "get_instances"]
    await client.aclose()


async def test_wrong_key_is_rejected_with_a_clear_message(standin: HostwindsStandIn) -> None:
    client = HostwindsClient("wrong", url=standin.url, requests_per_second=1000)
    with pytest.raises(HostwindsRejectedError, match="Invalid API key"):
        await client.get_instances()
    await client.aclose()


async def test_transient_failures_are_retried_with_backoff(standin: HostwindsStandIn) -> None:
    client = make_client(standin.url)
    standin.inject("get_instances", "5xx", times=2)
    standin.inject("get_instances", "timeout", times=1)
    assert await client.get_instances() == []
    assert standin.actions() == ["get_instances"] * 4
    await client.aclose()


async def test_a_create_is_never_retried_even_when_it_timed_out(standin: HostwindsStandIn) -> None:
    client = make_client(standin.url)
    standin.inject("add_instance", "5xx")
    with pytest.raises(HostwindsUnavailableError, match="not retried"):
        await order(client)
    assert standin.actions() == ["add_instance"]
    await client.aclose()


async def test_create_that_answers_an_error_after_succeeding_leaves_one_server(
    standin: HostwindsStandIn,
) -> None:
    client = make_client(standin.url)
    standin.inject("add_instance", "done_but_error")
    with pytest.raises(HostwindsRejectedError):
        await order(client)
    assert len(await client.find_by_name("pm-a")) == 1
    await client.aclose()


async def test_circuit_opens_after_repeated_failures_and_half_opens_later(
    standin: HostwindsStandIn,
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, open_seconds=30, clock=lambda: now[0])
    client = make_client(standin.url, retries=1, breaker=breaker)
    standin.inject("get_instances", "5xx", times=4)
    with pytest.raises(HostwindsUnavailableError):
        await client.get_instances()
    with pytest.raises(HostwindsUnavailableError, match="circuit open"):
        await client.get_instances()
    calls = len(standin.calls)
    assert calls == 3  # the last attempt was refused locally, without a request
    now[0] = 31.0  # half-open: one request probes the API; it fails, and opens it again
    with pytest.raises(HostwindsUnavailableError):
        await client.get_instances()
    now[0] = 62.0
    assert await client.get_instances() == []
    await client.aclose()


async def test_throttle_spaces_requests(standin: HostwindsStandIn) -> None:
    standin.rate_limit = 5
    client = make_client(standin.url, requests_per_second=4.0, retries=0)
    for _ in range(8):
        await client.get_instances()  # never answered 429: the client stays under the limit
    assert len(standin.calls) == 8
    await client.aclose()


async def test_rate_limit_answer_is_retried(standin: HostwindsStandIn) -> None:
    standin.rate_limit = 1
    client = make_client(standin.url, requests_per_second=1000.0, backoff_base=0.6)
    await client.get_instances()
    assert await client.get_instances() == []  # first try 429, retried after the backoff
    await client.aclose()
