"""End-to-end sending throughput: claim -> render -> sign -> SMTP, against two baselines.

All three send the same ~5 KB message to the same discarding SMTP sink (its own process) on
loopback, in the same run:

* sender: the real `penguinmails-sender` program (a subprocess), a campaign of N deliveries in
  PostgreSQL, Redis token buckets, RSA-2048 + Ed25519 DKIM signatures, 16 SMTP connections;
* (a) raw aiosmtplib: the pre-built message over 16 persistent connections, no signing, no DB;
* (b) naive: dkimpy RSA-2048 signing + smtplib, one message after the other;
* (c) signing-limited: (a) with the same RSA-2048 + Ed25519 signatures made by `cryptography`
  for every message (`bench.signing.bare_signer`), no database: what the sender could reach
  if the ledger, throttles, rotation and rendering cost nothing.

(a) and (c) run on the sender's event loop (uvloop), so a ratio compares the work, not the loops.

Printed: messages per second of each, the ratios sender/(a) (goal >= 0.5), sender/(b) (goal
>= 5) and sender/(c) (issue 10's goal >= 0.8), and the sender's peak RSS (VmHWM, with its
signing process). On a shared machine the wall clock counts the time other work held the
cores, so the CPU seconds per message are printed too: of the sender process and its signing
process (`sender.signing`) from the moment the gate opens until the last message is sent, of
the PostgreSQL instance (postmaster and every backend but the benchmark's own watcher, which
counts the sent messages) and of Redis over the same time, and of the baseline (c) process;
sender / (c) is printed both per CPU-second of the sender's processes and with PostgreSQL and
Redis added to the sender's side.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Protocol

import aiosmtplib
import asyncpg
import redis
import uvloop

from penguinmails.bench.baselines import bare_signer
from penguinmails.bench.measure import (
    cpu_seconds,
    parent_pid,
    tree_cpu_seconds,
    tree_peak_rss_mib,
)
from penguinmails.common.db import tenant_connection, tenant_scope
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    Relay,
    campaign_counts,
    enqueue,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.db.migrate import migrate
from penguinmails.common.db.tenants import upsert_tenant
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.devstack.ports import free_port, is_listening


class _Services(Protocol):
    """What the benchmark needs of the local stack (a `devstack.stack.Stack` has it)."""

    database_url: str
    redis_url: str


MESSAGES = 3000
NAIVE_MESSAGES = 300
CONNECTIONS = 16
KEY = "bench-platform-master-key"
BODY = ("We help teams like {{ company }} send mail that lands. " * 8 + "\n") * 10  # ~5 KB


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "penguinmails.devstack.sink", str(port)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    deadline = time.monotonic() + 30
    while not is_listening(port):
        if time.monotonic() > deadline:
            raise RuntimeError("sink did not start")
        time.sleep(0.05)
    return process, port


def sample_message() -> bytes:
    body = BODY.replace("{{ company }}", "Acme").replace("\n", "\r\n")
    return (
        "From: Jane <jane@bench.example>\r\nTo: someone@dest.test\r\nSubject: Hello\r\n"
        "Message-ID: <x@bench.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode()


async def raw_aiosmtplib(port: int, count: int) -> float:
    message = sample_message()
    per_connection = count // CONNECTIONS

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for _ in range(per_connection):
            await smtp.sendmail("b@bench.example", ["someone@dest.test"], message)
        await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return per_connection * CONNECTIONS / (time.perf_counter() - started)


async def signed_aiosmtplib(port: int, count: int) -> tuple[float, float]:
    """Messages per second and CPU seconds (of this process) of the signing-limited baseline."""
    sign = bare_signer(generate_private_key("rsa2048"), generate_private_key("ed25519"))
    message = sample_message()
    per_connection = count // CONNECTIONS

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for _ in range(per_connection):
            signature = sign(message)  # on the event loop (the sender signs on a thread)
            await smtp.sendmail(
                "b@bench.example",
                ["someone@dest.test"],
                b"X-Bench-Signature: " + signature + b"\r\n" + message,
            )
        await smtp.quit()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    cpu = time.process_time() - cpu
    return per_connection * CONNECTIONS / (time.perf_counter() - started), cpu


def naive_dkimpy(port: int, count: int) -> float:
    import dkim

    pem = generate_private_key("rsa2048")
    message = sample_message()
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for _ in range(count):
            signature = dkim.sign(message, b"rsa1", b"bench.example", pem)
            smtp.sendmail("b@bench.example", ["someone@dest.test"], signature + message)
    return count / (time.perf_counter() - started)


async def prepare_campaign(dsn: str, port: int, secrets: Path) -> tuple[str, uuid.UUID, uuid.UUID]:
    await migrate(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        tenant_id = await upsert_tenant(
            pool,
            name=name,
            tier="enterprise",
            namespace=f"tenant-{name}",
            display_name=None,
            contact_email="ops@bench.example",
            suspended=False,
        )
        now = datetime.now(UTC)
        keys = KeySet(
            (
                DkimKey("rsa1", "rsa2048", KeyState.ACTIVE, now, generate_private_key("rsa2048")),
                DkimKey("ed1", "ed25519", KeyState.ACTIVE, now, generate_private_key("ed25519")),
            )
        )
        folder = secrets / "bench-dkim"
        folder.mkdir(parents=True)
        for key, value in secret_data(keys).items():
            (folder / key).write_bytes(base64.b64decode(value))
        plan = CampaignPlan(
            from_address="jane@bench.example",
            subject="Hello {{ first_name }}",
            text="Hi {{ first_name }},\n\n" + BODY,
            domain="bench.example",
            dkim_secret="bench-dkim",  # noqa: S106 (a Secret's name, not a password)
            unsubscribe_url="https://unsubscribe.bench.example/u",
            unsubscribe_mailto="unsubscribe@bench.example",
            postal_address="1 Bench Road, Benchville",
            relays=[Relay(name="sink", host="127.0.0.1", port=port, tls="none")],
            per_mailbox_per_day=10_000_000,
        )
        csv = "email,first_name,company\n" + "".join(
            f"c{i}@dest.test,Name{i},Company {i}\n" for i in range(MESSAGES)
        )
        uid = uuid.uuid4()
        async with tenant_connection(pool, tenant_id) as conn:
            await import_contacts(conn, "all", csv.encode(), KEY.encode())
            await upsert_campaign(
                conn, uid=uid, namespace=f"tenant-{name}", name="bench", plan=plan
            )
            await enqueue(conn, uid, ["all"])
        return name, tenant_id, uid
    finally:
        await pool.close()


@dataclass(frozen=True)
class SenderRun:
    """The sender's run: wall-clock rate, peak RSS, and CPU seconds used while it sent, by
    itself and by the PostgreSQL and Redis servers (the whole instance: the bench's own
    polling is one query per 0.1 s)."""

    rate: float
    rss: float
    cpu: float
    postgres_cpu: float
    redis_cpu: float


def _server_pids(dsn: str, redis_url: str) -> tuple[int, int]:
    """The postmaster's and the Redis server's pids (both local: the bench's own stack)."""

    async def postmaster_pid() -> int:
        conn = await asyncpg.connect(dsn)
        try:  # the parent of a backend, read while that backend lives
            return parent_pid(int(await conn.fetchval("SELECT pg_backend_pid()")))
        finally:
            await conn.close()

    postmaster = asyncio.run(postmaster_pid())
    client = redis.Redis.from_url(redis_url)
    try:
        redis_pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    return postmaster, redis_pid


async def _watch(
    dsn: str, tenant_id: uuid.UUID, uid: uuid.UUID, sender: subprocess.Popen[bytes]
) -> tuple[float, float, float, float]:
    """Open the gate, wait until every message is sent; returns the seconds it took, the
    sender's peak RSS, the sender's CPU seconds over that time and those of this watcher's
    own PostgreSQL backend (its counting every 0.1 s is not the sender's work, and grows with
    the wall clock: on a loaded machine it was a third of PostgreSQL's CPU per message)."""
    conn = await asyncpg.connect(dsn)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        watcher = cpu_seconds(backend)
        started, cpu = time.perf_counter(), tree_cpu_seconds(sender.pid)
        async with tenant_scope(conn, tenant_id):
            await set_sending(conn, uid, True)
        rss = 0.0
        while True:
            rss = max(rss, tree_peak_rss_mib(sender.pid))
            async with tenant_scope(conn, tenant_id):
                counts = await campaign_counts(conn, uid)
            if counts["sent"] >= MESSAGES:
                break
            if time.perf_counter() - started > 900:  # a guard: the machine may be shared
                raise RuntimeError("the sender did not finish within 15 minutes")
            await asyncio.sleep(0.1)
        seconds, cpu = time.perf_counter() - started, tree_cpu_seconds(sender.pid) - cpu
        watcher = cpu_seconds(backend) - watcher
        return seconds, max(rss, tree_peak_rss_mib(sender.pid)), cpu, watcher
    finally:
        await conn.close()


PROFILE_ENV = "PM_BENCH_PROFILE"
"""Set to a file name: the sender is sampled by py-spy while it sends (`--nonblocking`, so
it is not paused) and its stacks written there in py-spy's `raw` (collapsed) format, one line
per stack with its count: `PM_BENCH_PROFILE=/tmp/sender.txt make bench BENCH=sending`."""


def _profile(pid: int, output: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
    )


def _started(sender: subprocess.Popen[bytes]) -> None:
    """Wait for the sender's "started" log line, then drain its log in a thread (a full pipe
    would block it)."""
    assert sender.stderr is not None
    stream = sender.stderr
    for line in stream:
        if b" started for tenant " in line:
            break
    else:
        raise RuntimeError(f"the sender exited with {sender.wait()} before it started")
    threading.Thread(target=lambda: stream.read(), daemon=True).start()


def run_sender(stack: _Services, base: Path, port: int) -> SenderRun:
    secrets = base / "bench-secrets"
    name, tenant_id, uid = asyncio.run(prepare_campaign(stack.database_url, port, secrets))
    postmaster, redis_pid = _server_pids(stack.database_url, stack.redis_url)
    env = {
        **os.environ,
        "PYTHONSAFEPATH": "1",
        "PM_TENANT": name,
        "PM_DATABASE_URL": stack.database_url,
        "PM_REDIS_URL": stack.redis_url,
        "PM_TOKEN_KEY": MasterKeys.parse(KEY).token_key(tenant_id).encode(),
        "PM_SECRETS_DIR": str(secrets),
        "PM_METRICS_PORT": "0",
        "PM_SENDER_CONCURRENCY": "64",
        "PM_POLL_SECONDS": "0.05",
        # Every bench recipient is at one domain: lift the per-provider policy limit, which
        # would otherwise be what is measured.
        "PM_PROVIDER_RATE": "1000000",
        # The sink is on loopback, which tenants' relays may not be in production.
        "PM_EGRESS_ALLOW": "127.0.0.0/8",
    }
    sender = subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"], env=env, stderr=subprocess.PIPE
    )
    profiler = None
    try:
        _started(sender)  # start-up (imports, the pool) is not what is measured
        if PROFILE_ENV in os.environ:
            profiler = _profile(sender.pid, Path(os.environ[PROFILE_ENV]))
        postgres_cpu, redis_cpu = tree_cpu_seconds(postmaster), cpu_seconds(redis_pid)
        seconds, rss, cpu, watcher = asyncio.run(_watch(stack.database_url, tenant_id, uid, sender))
        postgres_cpu = tree_cpu_seconds(postmaster) - postgres_cpu - watcher
        redis_cpu = cpu_seconds(redis_pid) - redis_cpu
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(60)
        sender.terminate()
        sender.wait(30)
    return SenderRun(MESSAGES / seconds, rss, cpu, postgres_cpu, redis_cpu)


ROUNDS = int(os.environ.get("PM_BENCH_SENDING_ROUNDS", "3"))
"""Rounds of the sender and of (c), alternating (c, sender, then sender, c, ...): on a machine
whose speed drifts (a shared VM), a ratio of two measures taken side by side, its median over
the rounds, says more than two measures taken minutes apart."""


def run(stack: _Services, base: Path | None = None) -> None:
    base = base or Path(tempfile.mkdtemp(prefix="penguinmails-bench-sending-"))
    sink, port = start_sink()
    senders: list[SenderRun] = []
    signed: list[tuple[float, float]] = []
    try:
        raw = uvloop.run(raw_aiosmtplib(port, MESSAGES))
        naive = naive_dkimpy(port, NAIVE_MESSAGES)
        for round_ in range(ROUNDS):
            if round_ % 2 == 0:
                signed.append(uvloop.run(signed_aiosmtplib(port, MESSAGES)))
                senders.append(run_sender(stack, base / f"round-{round_}", port))
            else:
                senders.append(run_sender(stack, base / f"round-{round_}", port))
                signed.append(uvloop.run(signed_aiosmtplib(port, MESSAGES)))
    finally:
        sink.terminate()
        sink.wait(10)
    rounds = list(zip(senders, signed, strict=True))
    wall = [s.rate / rate for s, (rate, _) in rounds]
    per_cpu = [cpu / s.cpu for s, (_, cpu) in rounds]
    with_servers = [cpu / (s.cpu + s.postgres_cpu + s.redis_cpu) for s, (_, cpu) in rounds]
    rate, signed_rate = median(s.rate for s in senders), median(r for r, _ in signed)
    ms = 1000 / MESSAGES
    print(
        f"sending: {MESSAGES} messages, ~5 KB, {CONNECTIONS} connections, loopback sink; "
        f"medians of {ROUNDS} alternating rounds of the sender and (c)"
    )
    print(f"  penguinmails-sender (claim+render+sign RSA+Ed25519+SMTP+record): {rate:8.0f} msg/s")
    print(f"  (a) raw aiosmtplib, no signing, no database:                     {raw:8.0f} msg/s")
    print(f"  (b) naive dkimpy RSA + smtplib, sequential:                      {naive:8.0f} msg/s")
    print(
        f"  (c) raw aiosmtplib + RSA-2048 and Ed25519 signatures, no database: "
        f"{signed_rate:6.0f} msg/s"
    )
    print(f"  sender / (a) = {rate / raw:.2f} (goal >= 0.5)")
    print(f"  sender / (b) = {rate / naive:.1f} (goal >= 5)")
    print(
        f"  sender / (c) = {median(wall):.2f} (goal >= 0.8), wall clock; "
        f"by round {' '.join(f'{x:.2f}' for x in wall)}"
    )
    print("  CPU per message (the machine is shared: the wall clock counts others' work):")
    print(f"    sender (and its signing process): {median(s.cpu for s in senders) * ms:6.3f} ms")
    print(f"    (c) baseline process:    {median(c for _, c in signed) * ms:6.3f} ms")
    print(
        f"    PostgreSQL (all but the watcher): "
        f"{median(s.postgres_cpu for s in senders) * ms:6.3f} ms"
    )
    print(f"    Redis:                   {median(s.redis_cpu for s in senders) * ms:6.3f} ms")
    print(
        f"  sender / (c) = {median(per_cpu):.2f} (goal >= 0.8), messages per CPU-second "
        f"of the sender and its signing process "
        f"(by round {' '.join(f'{x:.2f}' for x in per_cpu)}); "
        f"with PostgreSQL and Redis: {median(with_servers):.2f}"
    )
    print(f"  sender peak RSS (with its signing process): {max(s.rss for s in senders):.0f} MiB")
