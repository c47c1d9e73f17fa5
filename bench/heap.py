"""What the operator holds per object: the real operator process, its heap counted on demand
and diffed between two object counts (docs/scaling.md, "Memory").

    python -m penguinmails.bench.heap run DIR     # the operator (its usual environment);
                                                  # SIGUSR1 writes DIR/<n>.json (and .snap)
    python -m penguinmails.bench.heap diff A B    # what grew from A to B, by type (and place)
    python -m penguinmails.bench.heap measure N M # both: a fresh local stack, N Tenants Ready,
                                                  # a snapshot, M in all, another, the diff

By default a census: every object the garbage collector tracks, counted and sized by type
(`sys.getsizeof`, shallow), cheap enough to run at thousands of objects. With
PM_BENCH_HEAP_TRACE=1 also tracemalloc snapshots, by the line that allocated: far more
precise, but it slows the operator several times (on a loaded machine, too slow for more
than a few hundred objects). Not part of `make bench`.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = 12
"""Frames kept per allocation: enough to see which of kopf's structures or ours allocated."""


def census() -> dict[str, list[int]]:
    """{type name: [count, shallow bytes]} over every object the collector tracks."""
    sizes: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for obj in gc.get_objects():
        kind = type(obj)
        entry = sizes[f"{kind.__module__}.{kind.__qualname__}"]
        entry[0] += 1
        entry[1] += sys.getsizeof(obj, 0)
    return dict(sizes)


def run(directory: Path) -> None:
    trace = os.environ.get("PM_BENCH_HEAP_TRACE") == "1"
    if trace:
        tracemalloc.start(FRAMES)
    directory.mkdir(parents=True, exist_ok=True)
    taken = 0

    def snapshot(_signal: int, _frame: FrameType | None) -> None:
        nonlocal taken
        taken += 1
        gc.collect()
        (directory / f"{taken}.json").write_text(json.dumps(census()))
        if trace:
            tracemalloc.take_snapshot().dump(str(directory / f"{taken}.snap"))
        (directory / f"{taken}.done").touch()

    signal.signal(signal.SIGUSR1, snapshot)
    from penguinmails.operator.__main__ import main as operator_main

    operator_main(["--liveness", ""])


def diff(before: Path, after: Path, top: int = 25) -> None:
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    grown = sorted(
        (
            (name, n - old.get(name, [0, 0])[0], b - old.get(name, [0, 0])[1])
            for name, (n, b) in new.items()
        ),
        key=lambda item: -item[2],
    )
    total = sum(b for _, _, b in grown)
    print(f"tracked objects grew by {total / 2**20:.1f} MiB (shallow sizes)")
    for name, count, size in grown[:top]:
        print(f"{size / 2**20:8.2f} MiB {count:+9d} {name}")
    snaps = before.with_suffix(".snap"), after.with_suffix(".snap")
    if not all(s.exists() for s in snaps):
        return
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    first, second = (tracemalloc.Snapshot.load(str(s)).filter_traces(filters) for s in snaps)
    for key in ("lineno", "traceback"):
        print(f"\n== allocations by {key}")
        for stat in second.compare_to(first, key)[:top]:
            print(f"{stat.size_diff / 2**20:8.2f} MiB {stat.count_diff:+8d} blocks")
            for line in stat.traceback.format(limit=FRAMES if key == "traceback" else 1):
                print("    " + line.strip())


def measure(first: int, second: int) -> None:
    """The operator under `run` on a fresh local stack: `first` Tenants Ready, a snapshot,
    `second` Tenants in all Ready, another snapshot; then their diff and the peak RSS at each."""
    import shutil
    import subprocess
    import tempfile
    import time

    from kubernetes import client

    from penguinmails.bench import tenants
    from penguinmails.bench.measure import peak_rss_mib
    from penguinmails.bench.watching import Tally
    from penguinmails.devstack.stack import Stack, api_client_for

    base = Path(tempfile.mkdtemp(prefix="penguinmails-heap-"))
    snapshots = base / "heap"
    try:
        with Stack(base) as stack, (base / "operator.log").open("ab") as log:
            api = client.CustomObjectsApi(api_client_for(stack.kubeconfig, tenants.THREADS))
            operator = subprocess.Popen(
                [sys.executable, "-m", "penguinmails.bench.heap", "run", str(snapshots)],
                env={**os.environ, **stack.env(), "PM_RESYNC_SECONDS": str(tenants.RESYNC_SECONDS)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                rss = []
                done = 0
                ready = Tally(
                    api, tenants.GROUP, tenants.VERSION, tenants.PLURAL, tenants.ready_tenant
                )
                for taken, upto in enumerate((first, second), start=1):
                    names = [f"t-{i:05d}" for i in range(done, upto)]
                    tenants.create_all(api, names, offset=done)
                    tenants.wait_ready(ready, upto, timeout=7200)
                    done = upto
                    # Every Tenant's first resync has run: the loop takes a Tenant reconciled
                    # into its next round (operator/resync_loop.py), within two intervals.
                    time.sleep(2 * tenants.RESYNC_SECONDS + 10)
                    operator.send_signal(signal.SIGUSR1)
                    while not (snapshots / f"{taken}.done").exists():
                        time.sleep(1)
                    rss.append(peak_rss_mib(operator.pid))
            finally:
                operator.terminate()
                operator.wait(timeout=120)
        print(f"heap: {first:,} Tenants, then {second:,}")
        for upto, mib in zip((first, second), rss, strict=True):
            print(f"  operator peak RSS at {upto:,} Tenants: {mib:.1f} MiB")
        print(f"  per 1,000 Tenants: {(rss[1] - rss[0]) / (second - first) * 1000:.1f} MiB")
        diff(snapshots / "1.json", snapshots / "2.json")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "measure":
        measure(int(argv[1]), int(argv[2]))
        return 0
    if len(argv) == 2 and argv[0] == "run":
        run(Path(argv[1]))
        return 0
    if len(argv) == 3 and argv[0] == "diff":
        diff(Path(argv[1]), Path(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
