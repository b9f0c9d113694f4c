"""Fixtures of the fault tests: a vhost per test, a link that can be cut, counts for the summary."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.processes import Router, Worker
from harness.vhost import isolated_vhost
from tests.faults.counting import CountingSubscriber
from tests.support.proxy import Proxy

TALLIES: list[dict[str, Any]] = []


@pytest.fixture
def vhost(broker_url: str) -> Iterator[str]:
    """A vhost of this test alone: no other worker of the session consumes its queues,
    and its connections can be dropped without touching anyone else's."""
    with isolated_vhost(broker_url) as url:
        yield url


@pytest.fixture
def link(own_router: Router) -> Iterator[Proxy]:
    """The worker's way to the router, which the test can cut and restore."""
    proxy = Proxy(own_router.rs_port).start()
    yield proxy
    proxy.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Starts workers (stopped at the end); each logs to its own folder."""
    started: list[Worker] = []

    def start(router: Router, broker_url: str, **env: str) -> Worker:
        logdir = tmp_path / f"worker-{len(started)}"
        logdir.mkdir()
        worker = Worker(router, broker_url, logdir, **env)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def subscribe() -> Iterator[Callable[..., CountingSubscriber]]:
    """Starts counting subscribers (closed at the end)."""
    started: list[CountingSubscriber] = []

    def start(url: str, user: str, topics: list[str], perms: list[str] | None = None):
        subscriber = CountingSubscriber(url, user, topics, perms or [])
        started.append(subscriber)
        return subscriber.start()

    yield start
    for subscriber in started:
        subscriber.close()


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Records a scenario's counts for the summary at the end of the run."""

    def record(**counts: Any) -> None:
        row = {"scenario": request.node.name, **counts}
        TALLIES.append(row)
        request.node.user_properties.append(("tally", row))
        # TIDINGS_FAULT_TALLIES=<file> keeps them, one JSON object a line.
        path = os.environ.get("TIDINGS_FAULT_TALLIES")
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLIES:
        return
    terminalreporter.section("fault tallies")
    for row in TALLIES:
        rest = ", ".join(f"{k}={v}" for k, v in row.items() if k != "scenario")
        terminalreporter.write_line(f"{row['scenario']}: {rest}")
