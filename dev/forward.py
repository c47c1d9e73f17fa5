"""Local services reachable from pods: a `socat` forwarder from the node's bridge to loopback.

The local services (API server, PostgreSQL, Redis, Knot, Postfix) listen on 127.0.0.1 only,
which a pod cannot reach (its loopback is its own). `Forwarder` listens on the bridge's gateway
address at the same port and forwards each connection (or datagram, for DNS over UDP) to
127.0.0.1, so a URL reaches the same service from a pod by swapping only the host:

    Forwarder(root, host=bridge.gateway, port=postgres.port).start()
    # pods: postgresql://...@10.213.N.1:<port>/...

Nothing listens beyond the bridge, and the service sees its clients on loopback, as it trusts.
"""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path
from typing import ClassVar

from penguinmails.devstack.ports import LOOPBACK
from penguinmails.devstack.process import PrivateService, StopSteps, find_binary


class ForwarderError(RuntimeError):
    """A forwarder could not start (socat missing, the port taken on the bridge)."""


class Forwarder(PrivateService):
    """socat from `host:port` (TCP, or UDP with `udp=True`) to `127.0.0.1:port`."""

    display_name = "socat"
    error = ForwarderError
    bind_failure = re.compile(r"Address already in use")
    # socat forks one child per connection; the whole group goes at once, so no long-lived
    # connection (an API watch) outlives the forwarder.
    stop_steps: ClassVar[StopSteps] = ((signal.SIGKILL, 5.0),)

    def __init__(self, root: Path, *, host: str, port: int, udp: bool = False) -> None:
        protocol = "udp" if udp else "tcp"
        super().__init__(
            root,
            root / f"socat-{protocol}-{port}.log",
            port=port,
            start_timeout=10.0,
            host=host,
        )
        self.udp = udp
        self.binary = find_binary(
            "socat", env=None, install="Debian: apt-get install socat", error=ForwarderError
        )

    def _command(self, port: int) -> list[str]:
        if self.udp:
            # One child per client address; it waits up to 10 s for the reply.
            listen = f"UDP4-RECVFROM:{port},bind={self.host},reuseaddr,fork"
            target = f"UDP4-SENDTO:{LOOPBACK}:{port}"
            return [self.binary, "-T", "10", listen, target]
        listen = f"TCP4-LISTEN:{port},bind={self.host},reuseaddr,fork,backlog=128"
        return [self.binary, listen, f"TCP4:{LOOPBACK}:{port}"]

    def _ready(self) -> bool:
        # Bound by socat once our own bind fails; a test connection would reach the service.
        kind = socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((self.host, self.port))
            except OSError:
                return True
        return False
