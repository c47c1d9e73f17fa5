"""The customer API at 50 concurrent clients: listing campaigns (a page of 20) and creating a
sending domain, as p50/p95/p99 latency and throughput.

Baseline, in the same run: a bare handler (bench/api_bare.py) making the same API-server calls
through the same client, with none of the API's work around them (authentication and the
membership check, validation, the audit entry, the error envelope). The two are measured in
alternating rounds so that load from elsewhere on the machine falls on both alike. The issue's
goal, printed beside the figures and never asserted: the API's p95 under 50 ms, and at least
half the bare handler's throughput.

Profiling one run: `PM_BENCH_PROFILE=<file> make bench BENCH=api` runs the API under cProfile
(its event loop's thread: our code, not the API-server calls in worker threads, which the bare
handler makes alike) and writes the profile to <file> when it stops (`python -m pstats <file>`).

Both servers are one uvicorn process with the same settings; the API uses the stack's admin
kubeconfig as `make run` does (dev/__main__.py), its own database login, and a user's access
token (users are not rate limited; API keys are, per minute).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from kubernetes import client

from penguinmails.api.http.tokens import new_signing_key
from penguinmails.api.v1alpha1 import GROUP_VERSION
from penguinmails.bench.api_bare import BareHandler
from penguinmails.common.db import accounts
from penguinmails.common.db.accounts import Role
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.devstack.api import ApiProcess, api_login
from penguinmails.devstack.stack import Stack, api_client_for

CLIENTS = 50
LIST_REQUESTS = 1000
CREATE_REQUESTS = 400
ROUNDS = 2
"""Each side is measured in ROUNDS alternating rounds of REQUESTS / ROUNDS requests."""
CAMPAIGNS = 20
WARMUP = 200
PASSWORD = "bench-password-" + secrets.token_hex(8)

Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def quantile(self, q: int) -> float:
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else float("nan")


async def load(url: str, token: str | None, request: Request, ids: range, sample: Sample) -> None:
    """CLIENTS clients, each sending its next request as soon as its last one is answered."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    next_id = iter(ids)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:

        async def one_client() -> None:
            for i in next_id:
                started = time.perf_counter()
                try:
                    response = await request(http, i)
                except httpx.TransportError as error:
                    # Counted and shown, not fatal: one dropped connection must not void a run.
                    sample.errors.append(f"{type(error).__name__} {error}")
                    continue
                sample.latencies.append(time.perf_counter() - started)
                if response.status_code >= 300:
                    sample.errors.append(f"{response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
        sample.seconds += time.perf_counter() - started


async def sign_in(url: str, email: str) -> str:
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/v1/auth/token", json={"email": email, "password": PASSWORD})
    answer.raise_for_status()
    token: str = answer.json()["accessToken"]
    return token


def _name(prefix: str, i: int) -> str:
    """A distinct object name per request; warm-up requests have negative numbers."""
    return f"{prefix}-w{-i}" if i < 0 else f"{prefix}-{i}"


class ProfiledApi(ApiProcess):
    """The API under cProfile, writing `profile` when it stops (PM_BENCH_PROFILE)."""

    def __init__(self, base: Path, env: dict[str, str], profile: str) -> None:
        super().__init__(base, env)
        self.profile = profile

    def _command(self, port: int) -> list[str]:
        python, _, module, *options = super()._command(port)
        # uvicorn raises SIGTERM again once it has stopped: ignored here, so that the profile is
        # written (as `python -m cProfile` would not be).
        run = f"runpy.run_module({module!r}, run_name='__main__')"
        code = (
            "import cProfile, runpy, signal, sys\n"
            "signal.signal(signal.SIGTERM, lambda *_: None)\n"
            f"sys.argv = [{module!r}, *sys.argv[1:]]\n"
            f"cProfile.run({run!r}, {self.profile!r})\n"
        )
        return [python, "-c", code, *options]


def domain(name: str) -> dict[str, object]:
    return {
        "name": name,
        "spec": {"domain": f"{name}.bench.example", "dnsProvider": {"type": "manual"}},
    }


async def compare(
    api_url: str,
    email: str,
    bare_url: str,
    api_request: Request,
    bare_request: Request,
    total: int,
) -> tuple[Sample, Sample]:
    api, bare = Sample(), Sample()
    share = total // ROUNDS
    await load(api_url, await sign_in(api_url, email), api_request, range(-WARMUP, 0), Sample())
    await load(bare_url, None, bare_request, range(-WARMUP, 0), Sample())
    for round_ in range(ROUNDS):
        ids = range(round_ * share, (round_ + 1) * share)
        await load(bare_url, None, bare_request, ids, bare)
        # A fresh token each round: it outlives a round (15 minutes) by far.
        await load(api_url, await sign_in(api_url, email), api_request, ids, api)
    return api, bare


def report(title: str, api: Sample, bare: Sample) -> None:
    print(f"  {title}")
    print(f"    {'':14} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}")
    for label, sample in (("bare handler", bare), ("API", api)):
        print(
            f"    {label:14} {sample.quantile(50):8.1f} {sample.quantile(95):8.1f} "
            f"{sample.quantile(99):8.1f} {sample.throughput:8.1f} {len(sample.errors):7d}"
        )
    ratios = [api.quantile(q) / bare.quantile(q) for q in (50, 95, 99)]
    ratios.append(api.throughput / bare.throughput)
    print(f"    {'API / bare':14} " + " ".join(f"{r:7.2f}x" for r in ratios))
    p95_met = api.quantile(95) < 50
    share_met = api.throughput >= 0.5 * bare.throughput
    print(
        f"    goal: API p95 < 50 ms ({'met' if p95_met else 'not met'}), "
        f"throughput >= 0.5x bare ({'met' if share_met else 'not met'})"
    )
    for sample in (api, bare):
        if sample.errors:
            print(f"    first error: {sample.errors[0]}")


async def _run(stack: Stack, base: Path) -> None:
    tenant = f"bench-{secrets.token_hex(3)}"
    namespace = f"tenant-{tenant}"
    kube = api_client_for(stack.kubeconfig)
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
    objects = client.CustomObjectsApi(kube)
    group, version = GROUP_VERSION.split("/")
    seed = domain("seed")
    objects.create_namespaced_custom_object(
        group, version, namespace, "sendingdomains",
        {"apiVersion": GROUP_VERSION, "kind": "SendingDomain", "metadata": {"name": "seed"},
         "spec": seed["spec"]},
    )  # fmt: skip
    for i in range(CAMPAIGNS):
        spec = {
            "sendingDomainRef": {"name": "seed"},
            "from": {"address": "hello@seed.bench.example", "name": "Bench"},
            "subject": f"Campaign {i}",
            "text": "Hello {{ first_name }}",
            "audience": {"lists": ["leads"]},
        }
        objects.create_namespaced_custom_object(
            group, version, namespace, "campaigns",
            {"apiVersion": GROUP_VERSION, "kind": "Campaign", "metadata": {"name": f"c-{i:02d}"},
             "spec": spec},
        )  # fmt: skip

    database_url = await api_login(stack.database_url, "pm_api_bench")
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        tenant_id = await upsert_tenant(
            pool, name=tenant, tier="enterprise", namespace=namespace, display_name=None,
            contact_email="ops@bench.example", suspended=False,
        )  # fmt: skip
        email = f"owner@{tenant}.example"
        user_id = await accounts.create_user(pool, email, PASSWORD)
        await accounts.add_membership(pool, tenant_id, user_id, Role.OWNER)
    finally:
        await pool.close()

    env = {
        "PM_API_DATABASE_URL": database_url,
        "PM_REDIS_URL": stack.redis_url,
        "PM_API_SIGNING_KEYS": new_signing_key("bench"),
        "PM_KUBECONFIG": str(stack.kubeconfig),
        # The bench measures the handlers, not the rate limits: 50 clients from one address
        # would pass the default allowances within the run (they still cost their Redis call).
        "PM_API_SOURCE_REQUESTS_PER_MINUTE": "100000000",
        "PM_API_KEY_REQUESTS_PER_MINUTE": "100000000",
    }
    profile = os.environ.get("PM_BENCH_PROFILE", "")
    api_process = ProfiledApi(base, env, profile) if profile else ApiProcess(base, env)
    with api_process as api, BareHandler(base, stack.kubeconfig, namespace) as bare:
        campaigns = f"/v1/tenants/{tenant}/campaigns"
        domains = f"/v1/tenants/{tenant}/sending-domains"

        async def api_list(http: httpx.AsyncClient, _: int) -> httpx.Response:
            return await http.get(campaigns)

        async def bare_list(http: httpx.AsyncClient, _: int) -> httpx.Response:
            return await http.get("/campaigns")

        async def api_create(http: httpx.AsyncClient, i: int) -> httpx.Response:
            return await http.post(domains, json=domain(_name("api", i)))

        async def bare_create(http: httpx.AsyncClient, i: int) -> httpx.Response:
            return await http.post("/sending-domains", json=domain(_name("bare", i)))

        listed = await compare(api.url, email, bare.url, api_list, bare_list, LIST_REQUESTS)
        created = await compare(api.url, email, bare.url, api_create, bare_create, CREATE_REQUESTS)
        failed = any(s.errors for s in (*listed, *created))
        logs = {"API": api.log_tail(40), "bare handler": bare.log_tail(40)} if failed else {}
    kube.close()

    print(f"benchmark: customer API, {CLIENTS} concurrent clients, one uvicorn process each")
    # The machine's load says how far the figures are from an idle machine's.
    print("  load average (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    report(f"list campaigns (a page of {CAMPAIGNS}), {LIST_REQUESTS} requests each", *listed)
    report(f"create a sending domain, {CREATE_REQUESTS} requests each", *created)
    for name, tail in logs.items():
        print(f"  {name} log, last lines:\n{tail}")


def run(stack: Stack, base: Path) -> None:
    asyncio.run(_run(stack, base))
