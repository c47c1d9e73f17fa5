"""Stripe's own API mock (`stripe-mock`), built from its Go module, on a private loopback port.

    with StripeMock(base_dir) as mock:
        client = StripeClient("sk_test_123", base_addresses={"api": mock.url})

`go install github.com/stripe/stripe-mock@<version>` with GOBIN pointed at
`<cache_root>/stripe-mock/<version>/` (like helm: skipped when the binary is there, one build at a
time behind dev/buildlock.py's lock). stripe-mock validates every request against Stripe's OpenAPI
spec and answers with fixture objects; it keeps no state, so tests drive subscription life cycles
with signed webhook events of their own.
"""

from __future__ import annotations

import itertools
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
from penguinmails.devstack.ports import is_listening
from penguinmails.devstack.process import PrivateService

log = logging.getLogger(__name__)

STRIPE_MOCK_VERSION = "v0.203.0"
STRIPE_MOCK_PACKAGE = "github.com/stripe/stripe-mock"


class StripeMockError(RuntimeError):
    """stripe-mock could not be built, started or stopped."""


@dataclass(frozen=True)
class StripeMockBuild:
    binary: Path
    seconds: float
    cached: bool


def stripe_mock_dir(version: str = STRIPE_MOCK_VERSION) -> Path:
    return cache_root() / "stripe-mock" / version


def build(version: str = STRIPE_MOCK_VERSION) -> StripeMockBuild:
    """Build stripe-mock `version` unless it is cached (about a minute cold on 2 cores)."""
    target = stripe_mock_dir(version)
    binary = target / "stripe-mock"
    if binary.is_file() and os.access(binary, os.X_OK):
        return StripeMockBuild(binary, 0.0, cached=True)
    with exclusive(target):
        if binary.is_file() and os.access(binary, os.X_OK):
            return StripeMockBuild(binary, 0.0, cached=True)  # built by another process meanwhile
        return _build_into(target, version)


def _build_into(target: Path, version: str) -> StripeMockBuild:
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
    log.info("building stripe-mock %s from %s", version, STRIPE_MOCK_PACKAGE)
    # Outside any module, so no go.mod of the caller's directory gets involved; go install checks
    # the module against the Go checksum database itself.
    subprocess.run(
        ["go", "install", "-trimpath", "-ldflags", "-s -w", f"{STRIPE_MOCK_PACKAGE}@{version}"],
        env=env,
        cwd=staging,
        check=True,
    )
    if not (staging / "stripe-mock").is_file():
        raise StripeMockError(f"go install finished but {staging / 'stripe-mock'} is missing")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return StripeMockBuild(target / "stripe-mock", time.monotonic() - started, cached=False)


class StripeMock(PrivateService):
    """A private stripe-mock serving HTTP on loopback (`url`); built on first use."""

    display_name = "stripe-mock"
    error = StripeMockError
    bind_failure = re.compile(r"address already in use")

    def __init__(self, base_dir: Path, *, port: int | None = None) -> None:
        root = base_dir / "stripe-mock"
        super().__init__(root, root / "stripe-mock.log", port=port, start_timeout=30.0)

    def requests(self, path: str) -> list[str]:
        """The request data stripe-mock logged for each call to `path` (e.g. /v1/invoices),
        oldest first: what reached "Stripe", for tests that count calls."""
        lines = self.log_tail(lines=100_000).splitlines()
        return [
            data.removeprefix("Request data = ")
            for request, data in itertools.pairwise(lines)
            if request.startswith("Request: ") and request.split(" ", 2)[2] == path
        ]

    @property
    def url(self) -> str:
        """The base address to give StripeClient (`base_addresses={"api": url}`)."""
        return f"http://{self.host}:{self.port}"

    def _command(self, port: int) -> list[str]:
        # Only on loopback (an empty address would bind every interface). -http-addr alone does
        # not turn HTTPS off: stripe-mock would also bind :12112 on every interface, and exit when
        # another instance holds it. So HTTPS gets a loopback port the system picks, unused.
        return [
            str(build().binary),
            "-http-addr",
            f"{self.host}:{port}",
            "-https-addr",
            f"{self.host}:0",
        ]

    def _prepare(self) -> None:
        super()._prepare()
        build()  # before the start timeout runs: a cold build takes about a minute

    def _ready(self) -> bool:
        return is_listening(self.port, self.host)
