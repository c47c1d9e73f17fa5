"""kstatus: what Flux sees. A small Go program (dev/kstatus/) that prints, for each object given as
JSON on stdin, the result of `sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute`, the library Flux's
health checks use, so the tests prove the operator's objects read as Flux should read them.

Built like the control plane: cached under `cache_root()` by the hash of its inputs, one build at
a time behind dev/buildlock.py's lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from penguinmails.devstack.buildlock import exclusive
from penguinmails.devstack.controlplane import BuildResult, cache_root

MODULE_DIR = Path(__file__).resolve().parent / "kstatus"
BINARY = "kstatus"


def _inputs_digest() -> str:
    """Hash of the module's files plus the Go toolchain version."""
    digest = hashlib.sha256()
    for path in [MODULE_DIR / "go.mod", MODULE_DIR / "go.sum", *sorted(MODULE_DIR.glob("*.go"))]:
        digest.update(path.relative_to(MODULE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    go_version = subprocess.run(
        ["go", "version"], check=True, capture_output=True, text=True
    ).stdout
    digest.update(go_version.encode())
    return digest.hexdigest()[:16]


def build() -> BuildResult:
    """Build the kstatus binary unless an up-to-date build is cached."""
    bin_dir = cache_root() / "kstatus" / _inputs_digest()
    if (bin_dir / BINARY).is_file():
        return BuildResult(bin_dir, 0.0, cached=True)
    with exclusive(bin_dir):
        if (bin_dir / BINARY).is_file():
            return BuildResult(bin_dir, 0.0, cached=True)  # another process built it meanwhile
        started = time.monotonic()
        staging = bin_dir.with_name(bin_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=readonly"}
        subprocess.run(
            ["go", "build", "-ldflags", "-s -w", "-o", str(staging / BINARY), "."],
            cwd=MODULE_DIR,
            env=env,
            check=True,
        )
        shutil.rmtree(bin_dir, ignore_errors=True)
        staging.rename(bin_dir)
        return BuildResult(bin_dir, time.monotonic() - started, cached=False)


@dataclass(frozen=True)
class KStatus:
    """One object's kstatus: InProgress, Current, Failed, Terminating, NotFound or Unknown."""

    kind: str
    name: str
    status: str
    message: str
    namespace: str = ""


def compute(objects: Sequence[Mapping[str, Any]], binary: Path | None = None) -> list[KStatus]:
    """kstatus of each object (as the API server returns it), in order."""
    path = binary if binary is not None else build().bin_dir / BINARY
    answer = subprocess.run(
        [str(path)],
        input="\n".join(json.dumps(obj) for obj in objects),
        capture_output=True,
        text=True,
        check=True,
    )
    return [KStatus(**json.loads(line)) for line in answer.stdout.splitlines()]
