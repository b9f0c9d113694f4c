"""The worker's instructions per event, counted by callgrind around a real stack."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator

import pytest

from bench import instructions
from harness.broker import rabbitmq_url
from harness.progress import Progress

pytestmark = pytest.mark.skipif(not shutil.which("valgrind"), reason="needs valgrind")


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with rabbitmq_url() as url:
        yield url


@pytest.mark.timeout(600)
def test_a_raw_event_costs_the_worker_a_counted_number_of_instructions(broker_url: str) -> None:
    results = instructions.run(broker_url, 40, ["a'"], Progress(2, io.StringIO()), warmup=40)
    per_event = results["per_event"]["a'"]
    # Counted only while instrumented: not the worker's start-up (billions), nor
    # nothing; a raw event takes about two hundred thousand on CPython 3.11.
    assert 20_000 < per_event < 5_000_000
    assert "(a') tidings, raw JSON domain event" in instructions.table(results)
