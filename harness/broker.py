"""The RabbitMQ the tests use: TIDINGS_BROKER_URL, the local one, or a testcontainers one."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from kombu import Connection

from harness.vhost import isolated_vhost

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"


def reachable(url: str) -> bool:
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        return True
    except Exception:
        return False


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    return result.returncode == 0


@contextmanager
def rabbitmq_url() -> Iterator[str]:
    """Yield an AMQP URL of a running RabbitMQ, or raise with what to do."""
    url = os.environ.get("TIDINGS_BROKER_URL", DEFAULT_URL)
    if reachable(url):
        with isolated_vhost(url) as isolated:
            yield isolated
        return
    if docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}//"
        return
    raise RuntimeError(
        f"no RabbitMQ at {Connection(url).as_uri()} and no Docker engine for a testcontainer: "
        "start RabbitMQ (rabbitmq-server -detached) or set TIDINGS_BROKER_URL"
    )
