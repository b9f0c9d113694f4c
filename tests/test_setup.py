"""`tidings setup` on a fresh vhost: raw events sent before any worker ever ran are kept."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import rabbit
from harness.clients import Subscriber
from harness.processes import BIN, Router, Worker, base_env
from harness.producers import post_raw
from harness.vhost import isolated_vhost


@pytest.fixture
def fresh(broker_url: str) -> Iterator[str]:
    """A vhost on which nothing of tidings was ever declared."""
    with isolated_vhost(broker_url) as url:
        yield url


def setup(vhost: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tidings"), "setup"],
        env=base_env(TIDINGS_BROKER_URL=vhost),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_events_sent_before_the_first_worker_are_kept(fresh: str, tmp_path: Path):
    first = setup(fresh)
    assert first.returncode == 0, first.stderr
    assert "tidings, tidings.events, tidings.events.dead" in first.stdout
    again = setup(fresh)  # safe on every start
    assert again.returncode == 0, again.stderr
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, "type": "publish", "topic": "tidings.user.5", "payload": {}}
    post_raw(fresh, body, "publish")
    assert rabbit.queue_depths(fresh)["tidings.events"] == (1, 0)

    router = Router(tmp_path / "router", TIDINGS_BROKER_URL=fresh).start()
    user = Subscriber(router.ws_url, "5", ["tidings.user.5"]).start()
    worker = Worker(router, fresh, tmp_path).start()
    try:
        # Already waiting in its queue: the first event the worker takes.
        assert user.wait_count(1, timeout=30)[0]["event_id"] == event_id
    finally:
        worker.stop()
        user.close()
        router.stop()


def test_an_unreachable_broker_is_one_line():
    result = setup("amqp://guest:guest@127.0.0.1:1//")
    assert result.returncode == 2
    assert result.stderr.startswith("tidings setup: cannot reach the broker at amqp://guest:**@")
    assert result.stderr.count("\n") == 1
