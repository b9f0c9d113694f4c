"""A throw-away RabbitMQ vhost per run, so that runs never share the fixed queue names."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit


def _rabbitmqctl(*args: str) -> bool:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


@contextmanager
def isolated_vhost(url: str, prefix: str = "tidings-test") -> Iterator[str]:
    """A fresh vhost on a local broker, deleted afterwards, so that runs never share
    the fixed queue names; the URL unchanged where rabbitmqctl cannot help."""
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if not (local and shutil.which("rabbitmqctl") and _rabbitmqctl("add_vhost", name)):
        yield url
        return
    try:
        user = parts.username or "guest"
        _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path="/" + quote(name, safe="")))
    finally:
        _rabbitmqctl("delete_vhost", name)
