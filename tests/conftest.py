"""Session-wide services for the tests: PostgreSQL (migrated) and Redis.

Each service is private to the test session (own port, own directory under one temporary base
directory, removed at the end) unless an existing one is named:

- `PM_DATABASE_URL`: use that database (migrations are applied to it) instead of starting one;
- `PM_REDIS_URL`: use that Redis instead of starting one.

Services start lazily: a test that needs neither starts nothing. Kubernetes fixtures live in
tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from penguinmails.common.db.migrate import migrate
from penguinmails.devstack.postgres import ExistingPostgres, PostgresServer
from penguinmails.devstack.redis import ExistingRedis, RedisServer
from penguinmails.devstack.stripe_mock import StripeMock

# Python processes the tests start run from the repository root, where the operator/ folder
# would shadow the standard library's `operator`; PYTHONSAFEPATH keeps the root off sys.path.
os.environ["PYTHONSAFEPATH"] = "1"


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    """One temporary base directory for every service of the session; removed at the end.

    A mkdtemp() directly in the system temp dir rather than pytest's tmp_path_factory: when
    running as root, PostgreSQL runs as the `postgres` user and must be able to enter it, and
    this way nothing of pytest's own (/tmp/pytest-of-root, 0700) has to be opened up.
    """
    path = Path(tempfile.mkdtemp(prefix="penguinmails-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres(services_dir: Path) -> AsyncIterator[PostgresServer | ExistingPostgres]:
    """A started PostgreSQL with the migrations applied (or `PM_DATABASE_URL`, migrated)."""
    url = os.environ.get("PM_DATABASE_URL")
    if url:
        await migrate(url)
        yield ExistingPostgres(url)
        return
    with PostgresServer(services_dir) as server:
        await migrate(server.dsn)
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres: PostgresServer | ExistingPostgres) -> str:
    """DSN of the session database, connecting as a superuser (or whoever PM_DATABASE_URL is)."""
    return postgres.dsn


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def db_pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the session database (on the session event loop)."""
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[RedisServer | ExistingRedis]:
    """A started Redis without persistence (or `PM_REDIS_URL`)."""
    url = os.environ.get("PM_REDIS_URL")
    if url:
        yield ExistingRedis(url)
        return
    with RedisServer(services_dir) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | ExistingRedis) -> str:
    """`redis://127.0.0.1:PORT/0` of the session Redis."""
    return redis_server.url


@pytest.fixture(scope="session")
def stripe_mock(services_dir: Path) -> Iterator[StripeMock]:
    """Stripe's own API mock on a free loopback port (built from its Go module on first use)."""
    with StripeMock(services_dir) as server:
        yield server
