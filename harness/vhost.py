"""A throw-away RabbitMQ vhost per run, so that runs never share the fixed queue names."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit


class NoIsolation(RuntimeError):
    """No throw-away vhost could be made: the run stops rather than share one."""


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )


@contextmanager
def isolated_vhost(url: str, prefix: str = "tidings-test") -> Iterator[str]:
    """A fresh vhost on the broker of `url`, deleted afterwards, so that runs never share
    the fixed queue names (nor touch what a developer keeps in theirs). Raises
    NoIsolation, saying why, where none can be made."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise NoIsolation(
            f"the broker at {parts.hostname} is not on this machine: rabbitmqctl cannot make "
            "a throw-away vhost there; run the tests against a local RabbitMQ"
        )
    if not shutil.which("rabbitmqctl"):
        raise NoIsolation("rabbitmqctl is not installed: it makes the tests' throw-away vhosts")
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    made = _rabbitmqctl("add_vhost", name)
    if made.returncode != 0:
        raise NoIsolation(f"rabbitmqctl add_vhost refused: {made.stderr.strip()[:300]}")
    try:
        user = parts.username or "guest"
        _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path="/" + quote(name, safe="")))
    finally:
        _rabbitmqctl("delete_vhost", name)
