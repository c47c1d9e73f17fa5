"""Token buckets shared through Redis: limits hold across senders, all-or-nothing per message."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from penguinmails.common.throttle import Limit, TokenBuckets, provider_group, warmup_daily_limit

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_two_senders_share_one_hourly_limit(redis: Redis) -> None:
    key = f"campaign:{uuid.uuid4()}:hour"
    a, b = TokenBuckets(redis), TokenBuckets(redis)  # two pods, one Redis
    granted = 0
    for bucket in (a, b) * 10:
        if await bucket.take([Limit.per_hour(key, 12)]) == 0:
            granted += 1
    assert granted == 12
    wait = await a.take([Limit.per_hour(key, 12)])
    assert 250 < wait <= 300  # one token per 300 s refills next


async def test_a_refused_message_takes_nothing_from_other_buckets(redis: Redis) -> None:
    roomy = Limit.per_day(f"mailbox:{uuid.uuid4()}", 100)
    full = Limit.per_hour(f"server:{uuid.uuid4()}", 1)
    buckets = TokenBuckets(redis)
    assert await buckets.take([full]) == 0
    for _ in range(5):
        assert await buckets.take([roomy, full]) > 0
    # The mailbox bucket still has all 100: exactly 100 more fit, the 101st waits.
    results = [await buckets.take([roomy]) for _ in range(101)]
    assert results.count(0.0) == 100 and results[-1] > 0


def test_google_hosted_domains_share_a_group() -> None:
    assert provider_group("acme.example", ["aspmx.l.google.com."]) == "google"
    assert provider_group("gmail.com", ["gmail-smtp-in.l.google.com"]) == "google"
    assert (
        provider_group("corp.example", ["corp-example.mail.protection.outlook.com"]) == "microsoft"
    )
    assert provider_group("small.example", ["mx1.hoster.example"]) == "hoster.example"
    assert provider_group("Solo.Example") == "solo.example"


def test_warmup_ramp() -> None:
    assert warmup_daily_limit(50, 20, 0, None) == 50
    assert warmup_daily_limit(50, 20, 1, None) == 60
    assert warmup_daily_limit(50, 20, 10, 200) == 200
    assert warmup_daily_limit(300, 30, 10_000, 57_000) == 57_000
