"""What the benchmarks (and the tests that count a process's work) measure about a process, read
the same way by each of them."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

_TICKS = os.sysconf("SC_CLK_TCK")


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


def samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, parsed by the client library's parser."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def scrape(port: int, timeout: float = 30.0) -> list[Sample]:
    """Every sample a process exposes on its Prometheus endpoint (loopback)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        return samples(response.read().decode())


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards); None once
    the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """CPU seconds (user + system) the process used so far; with `reaped_children`, also
    those of its children it has waited for. On a shared machine the wall clock counts the
    time other work held the cores; this does not."""
    fields = _stat(pid)
    if fields is None:
        return float("nan")
    # utime, stime, cutime, cstime are fields 14-17 of stat(5), here 11-14 from field 3.
    used = int(fields[11]) + int(fields[12])
    if reaped_children:
        used += int(fields[13]) + int(fields[14])
    return used / _TICKS


def _children(pid: int) -> list[int]:
    """The living processes whose parent is `pid`."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(pid):  # its parent
                children.append(int(entry.name))
    return children


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a server and its worker processes (PostgreSQL: the postmaster and every
    backend, living or exited, since the postmaster reaps them)."""
    total = cpu_seconds(pid, reaped_children=True)
    return total + sum(cpu_seconds(child, reaped_children=True) for child in _children(pid))


def tree_peak_rss_mib(pid: int) -> float:
    """The peak RSS of a process plus those of its living children (the sender and its
    signing process): a bound on their peak together, since each peaked at its own moment."""
    return peak_rss_mib(pid) + sum(peak_rss_mib(child) for child in _children(pid))


def parent_pid(pid: int) -> int:
    fields = _stat(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return int(fields[1])
