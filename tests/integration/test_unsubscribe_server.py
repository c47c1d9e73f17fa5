"""The unsubscribe endpoint as its pod runs it: serves, answers health checks, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from penguinmails.devstack.ports import free_port
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def test_serves_then_exits_cleanly_on_sigterm(postgres_dsn: str) -> None:
    port = free_port()
    env = {**os.environ, "PM_DATABASE_URL": postgres_dsn, "PM_SUPPRESSION_KEY": "k" * 32}
    server = subprocess.Popen(
        [sys.executable, "-m", "penguinmails.api.cli", "unsubscribe", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: healthy(port), timeout=30, what="the unsubscribe endpoint answering")
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, output.decode(errors="replace")
