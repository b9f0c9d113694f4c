"""Fixtures: a real RabbitMQ, a real Crossbar router on free ports, a real Celery worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import processes
from harness.broker import purge, rabbitmq_url
from harness.processes import Router, Worker

# The test process itself (publishers, ticket issuers) uses the test secrets.
os.environ.update(processes.base_env())

QUEUES = ("tidings", "tidings.events", "tidings.events.dead")


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    with rabbitmq_url() as url:
        os.environ["TIDINGS_BROKER_URL"] = url
        purge(url, *QUEUES)
        yield url


@pytest.fixture(scope="session")
def router(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """One router for the session; tests that stop a router start their own.

    It knows the broker too: the dev endpoint of the admin page enqueues tasks.
    """
    proc = Router(tmp_path_factory.mktemp("router")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def worker(router: Router, broker_url: str, tmp_path_factory: pytest.TempPathFactory):
    proc = Worker(router, broker_url, Path(tmp_path_factory.mktemp("worker"))).start()
    yield proc
    proc.stop()


@pytest.fixture
def own_router(broker_url: str, tmp_path: Path) -> Iterator[Router]:
    """A router this test may stop and restart."""
    proc = Router(tmp_path / "router").start()
    yield proc
    proc.stop()
