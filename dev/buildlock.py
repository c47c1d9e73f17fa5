"""One build at a time per cached output, across processes.

Several test runs on one machine may find the same cache entry missing at once; without a lock
each would run the same many-minute Go build and rename its result over the others'.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(target: Path) -> Iterator[None]:
    """Hold an advisory lock on `<target>.lock` (released on exit, or when the process dies)."""
    lock_file = target.with_name(target.name + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
