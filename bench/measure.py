"""What the benchmarks measure about a process, read the same way by each of them."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB; NaN once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
