"""Free TCP ports on loopback for the private services of the local stack.

A port found free can be taken by someone else before the service binds it; the launchers
(`PostgresServer`, `RedisServer`) therefore retry with a fresh port when the bind fails and the
caller did not ask for a specific one. Within one process a port is never handed out twice.
"""

from __future__ import annotations

import contextlib
import socket
import threading

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on `host` that nothing listens on right now.

    The kernel picks it (bind to port 0); ports already returned by this function in this process
    are skipped, so two services started back to back never get the same one.
    """
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return `count` distinct free ports (all sockets are held open until every port is found)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    with _lock, contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count * 50):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port in _handed_out:
                continue
            ports.append(port)
            if len(ports) == count:
                _handed_out.update(ports)
                return ports
        raise RuntimeError(f"could not find {count} free port(s) on {host}")


def is_listening(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
