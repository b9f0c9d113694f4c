"""Fixtures: a real RabbitMQ, a real Crossbar router on free ports, a real Celery worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import processes
from harness.broker import rabbitmq_url
from harness.processes import Router, Worker

# The test process itself (publishers, ticket issuers) uses the test secrets.
os.environ.update(processes.base_env())


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """A vhost of this run's own (or a broker of its own): nothing to purge, nothing shared."""
    with rabbitmq_url() as url:
        os.environ["TIDINGS_BROKER_URL"] = url
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


# CI turns every skip into a failure (TIDINGS_STRICT_SKIPS=1, set by .ci/run): a test
# that cannot run there is a missing part, not a pass. Elsewhere the skips are listed
# loudly at the end of the run.
STRICT_SKIPS = os.environ.get("TIDINGS_STRICT_SKIPS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if STRICT_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and TIDINGS_STRICT_SKIPS=1 allows none: {reason}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        terminalreporter.section("SKIPPED: these tests did not run", sep="!", red=True)
        for report in skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            terminalreporter.write_line(f"{report.nodeid}: {reason}")
