"""Free TCP ports on loopback, and waiting for a port to answer (never a fixed sleep)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(
    port: int, timeout: float, alive: Callable[[], bool] = lambda: True, host: str = "127.0.0.1"
) -> None:
    """Return once host:port accepts connections; never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process died before port {port} opened")
        if port_open(port, host):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")
