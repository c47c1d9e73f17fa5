"""Mount points under a directory, and unmounting them all before the directory is removed.

debootstrap mounts /proc (and, in a container, binds /dev) inside the root filesystem it makes;
the kubelet and containerd mount volumes, snapshots and their own root under the node's
directory. A tree is removed only once nothing is mounted under it: `rm -rf` through a bind
mount would delete the files of the machine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


class StillMountedError(RuntimeError):
    """Something under the directory could not be unmounted."""


def mount_points() -> list[str]:
    """Every mount point of this process's mount namespace."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # The 5th field, with spaces and other special characters octal-escaped.
        point = line.split()[4]
        points.append(re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), point))
    return points


def mounted_under(path: Path) -> list[str]:
    base = str(path.resolve())
    return [p for p in mount_points() if p == base or p.startswith(base + "/")]


def unmount_under(path: Path) -> None:
    """Unmount everything at or under `path`, deepest first (lazily if busy)."""
    for _ in range(3):
        mounts = mounted_under(path)
        if not mounts:
            return
        for point in sorted(mounts, key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True)
    left = mounted_under(path)
    if left:
        raise StillMountedError(f"still mounted under {path}: {left}")
