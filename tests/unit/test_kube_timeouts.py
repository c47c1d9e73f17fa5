"""A hung API server connection fails after the configured timeouts and retries, never hangs.

The "API server" is a real listening socket that accepts connections and never answers.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from penguinmails.common.settings import KubeClientSettings
from penguinmails.operator.errors import describe
from penguinmails.operator.kube import Kube, load_config


class SilentServer:
    """Accepts every connection, reads nothing, answers nothing; counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture()
def silent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    server = SilentServer()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("PM_KUBECONFIG", str(kubeconfig))
    yield server
    server.close()


def test_a_silent_api_server_fails_the_call_after_its_retries(silent: SilentServer) -> None:
    settings = KubeClientSettings(connect_timeout_seconds=1, read_timeout_seconds=0.3, retries=2)

    async def call() -> BaseException:
        # As the operator does it: discovery (at construction) and calls in worker threads.
        with pytest.raises(Exception) as raised:
            kube = await asyncio.to_thread(Kube, load_config(settings))
            await kube.get("v1", "Secret", "anything", "default")
        return raised.value

    # The bound only keeps a regression from hanging the suite (a thread stuck in a read
    # cannot be cancelled): worst case, every attempt's read timeout plus the backoffs.
    bound = (settings.retries + 1) * settings.read_timeout_seconds + 0.5 * 2**settings.retries
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: outcome.append(asyncio.run(call())), daemon=True)
    worker.start()
    worker.join(timeout=bound * 10)
    assert outcome, "the call to a silent API server never returned"
    error = outcome[0]
    # One first attempt plus the configured retries, each a connection of its own.
    assert len(silent.accepted) == settings.retries + 1
    failure = describe(error)
    assert failure.reason == "Unreachable"
    assert "retrying" in failure.message
