"""Helm, built from its upstream Go module into the same cache as the control plane.

`go install helm.sh/helm/v3/cmd/helm@<version>` with GOBIN pointed at
`<cache_root>/helm/<version>/`; skipped when the binary is already there. The version is pinned
here; the module's go.sum is checked against the Go checksum database by `go install` itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from penguinmails.devstack.buildlock import exclusive
from penguinmails.devstack.controlplane import cache_root

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = REPO_ROOT / "charts" / "penguinmails"
GENERATED_CRDS = REPO_ROOT / "crds"

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3"
HELM_PACKAGE = f"{HELM_MODULE}/cmd/helm"


@dataclass(frozen=True)
class HelmBuild:
    binary: Path
    seconds: float
    cached: bool


def helm_dir(version: str = HELM_VERSION) -> Path:
    return cache_root() / "helm" / version


def _kubernetes_version(version: str, env: dict[str, str], cwd: Path) -> tuple[str, str]:
    """The Kubernetes major/minor helm assumes offline (`helm template`, `helm lint`).

    Helm's Makefile derives it from the client-go it is built with (v0.37 -> 1.37) and sets it by
    ldflags; without them helm would claim Kubernetes 1.20 and refuse charts that need newer.
    """
    listing = subprocess.run(
        ["go", "mod", "download", "-json", f"{HELM_MODULE}@{version}"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    go_mod = Path(json.loads(listing.stdout)["GoMod"]).read_text()
    found = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", go_mod, re.MULTILINE)
    if not found:
        raise RuntimeError(f"no k8s.io/client-go requirement in the go.mod of helm {version}")
    return "1", found.group(1)


def build(version: str = HELM_VERSION) -> HelmBuild:
    """Build helm `version` unless it is cached; report where it is and how long the build took."""
    target = helm_dir(version)
    binary = target / "helm"
    if binary.is_file() and os.access(binary, os.X_OK):
        return HelmBuild(binary, 0.0, cached=True)
    with exclusive(target):
        if binary.is_file() and os.access(binary, os.X_OK):
            return HelmBuild(binary, 0.0, cached=True)  # another process built it meanwhile
        return _build_into(target, version)


def _build_into(target: Path, version: str) -> HelmBuild:
    binary = target / "helm"
    started = time.monotonic()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOBIN": str(staging),
        "GOFLAGS": "-buildvcs=false",
        "GOWORK": "off",
    }
    # Run outside any module, so no go.mod or go.work of the caller's directory gets involved.
    major, minor = _kubernetes_version(version, env, staging)
    ldflags = " ".join(
        [
            "-s -w",
            f"-X {HELM_MODULE}/internal/version.version={version}",
            f"-X {HELM_MODULE}/internal/version.gitTreeState=clean",
            f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMajor={major}",
            f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMinor={minor}",
            f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMajor={major}",
            f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMinor={minor}",
        ]
    )
    log.info("building helm %s from %s (a cold build takes a few minutes)", version, HELM_PACKAGE)
    subprocess.run(
        ["go", "install", "-trimpath", "-ldflags", ldflags, f"{HELM_PACKAGE}@{version}"],
        env=env,
        cwd=staging,
        check=True,
    )
    if not (staging / "helm").is_file():
        raise RuntimeError(f"go install finished but {staging / 'helm'} is missing")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return HelmBuild(binary, time.monotonic() - started, cached=False)


def build_helm() -> Path:
    """The path of a helm binary built from source (cached after the first build)."""
    return build().binary


def main(argv: list[str] | None = None) -> None:
    """Print the path of the helm binary, building it first if needed."""
    import argparse

    argparse.ArgumentParser(prog="python -m penguinmails.devstack.helm").parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = build()
    state = "cached" if result.cached else f"built in {result.seconds:.0f}s"
    print(f"{result.binary} ({state})")


if __name__ == "__main__":
    main()
