"""The bare handler the API benchmark compares with: the same API-server calls the customer
API makes for listing campaigns and creating a sending domain, through the same client class
(`api/http/kube.py`, the same thread offload and connection pool), served by the same uvicorn
settings, and nothing else: no framework, no authentication, validation, rate limit,
idempotency or audit entry. What the API costs on top is the ratio the benchmark prints.

    python -m penguinmails.bench.api_bare --port N     # PM_KUBECONFIG, PM_BENCH_NAMESPACE
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from penguinmails.api.http.kube import CustomObjects
from penguinmails.api.v1alpha1 import GROUP_VERSION
from penguinmails.devstack.process import PrivateService

__all__ = ["BareHandler", "app"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_kube: CustomObjects | None = None


async def _answer(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global _kube
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        _kube = CustomObjects(os.environ.get("PM_KUBECONFIG"))
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        _kube.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert _kube is not None
    namespace = os.environ["PM_BENCH_NAMESPACE"]
    route = (scope["method"], scope["path"])
    if route == ("GET", "/campaigns"):
        items, cont = await _kube.list(namespace, "campaigns", limit=20, cont=None)
        await _answer(send, 200, {"data": items, "hasMore": cont is not None})
    elif route == ("POST", "/sending-domains"):
        given = json.loads(await _body(receive))
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": "SendingDomain",
            "metadata": {"name": given["name"], "namespace": namespace},
            "spec": given["spec"],
        }
        await _answer(send, 201, await _kube.create(namespace, "sendingdomains", body))
    elif route == ("GET", "/healthz"):
        await _answer(send, 200, {"status": "ok"})
    else:
        await _answer(send, 404, {})


class BareHandler(PrivateService):
    display_name = "bare handler"
    error = RuntimeError
    poll_interval = 0.1

    def __init__(self, base_dir: Path, kubeconfig: Path, namespace: str) -> None:
        root = base_dir / "bare"
        super().__init__(root, root / "bare.log", start_timeout=60.0)
        self._given_env = {"PM_KUBECONFIG": str(kubeconfig), "PM_BENCH_NAMESPACE": namespace}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self, port: int) -> list[str]:
        module = "penguinmails.bench.api_bare"
        return [sys.executable, "-m", module, "--host", self.host, "--port", str(port)]

    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "PYTHONSAFEPATH": "1", **self._given_env}

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def main() -> int:
    parser = argparse.ArgumentParser(prog="penguinmails.bench.api_bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    # The API's own uvicorn settings (api/http/__main__.py), access log included.
    uvicorn.run(app, host=options.host, port=options.port, log_level="info", server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
