"""What the Kubernetes client raises when the API server is unreachable is transient to the sender.

A sender pod whose connection to the API server is refused (an API server restart, kube-proxy
rewriting its rules) must requeue the delivery without using an attempt, not defer it for
minutes as a "sender error". The client raises urllib3's MaxRetryError, which is not an OSError.
"""

from __future__ import annotations

import socket

import pytest
from kubernetes.client import ApiClient, Configuration, CoreV1Api

from penguinmails.sender.engine import TRANSIENT


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_api_server_connection_is_transient() -> None:
    config = Configuration()
    config.host = f"http://127.0.0.1:{_closed_port()}"
    config.retries = 0
    with ApiClient(config) as client, pytest.raises(Exception) as raised:
        CoreV1Api(client).read_namespaced_secret("x", "y", _request_timeout=2)
    assert isinstance(raised.value, TRANSIENT), type(raised.value)
