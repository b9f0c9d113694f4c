"""The router's way into the durable pipeline (router.enqueue) against the real broker: a
message is reported done only when RabbitMQ has confirmed and routed it, else it is reported
failed; none is left without an answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kombu import Connection

from harness import rabbit
from harness.ports import free_port
from harness.vhost import isolated_vhost
from router.enqueue import Enqueuer, NotQueued
from tidings.names import EVENTS_QUEUE


class Answers:
    """Collects what `done` reported for each message."""

    def __init__(self) -> None:
        self.results: dict[int, BaseException | None] = {}
        self._cond = threading.Condition()

    def done_for(self, n: int):  # type: ignore[no-untyped-def]
        def done(error: BaseException | None) -> None:
            with self._cond:
                self.results[n] = error
                self._cond.notify_all()

        return done

    def wait(self, count: int, timeout: float = 30) -> dict[int, BaseException | None]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.results) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.results)} of {count} answered"
                self._cond.wait(left)
            return dict(self.results)


@pytest.fixture
def vhost(broker_url: str) -> Iterator[str]:
    with isolated_vhost(broker_url) as url:
        yield url


def queued(vhost: str) -> int:
    return rabbit.queue_depths(vhost)[EVENTS_QUEUE][0]


def test_every_message_is_confirmed_and_in_the_queue(vhost: str):
    enqueuer, answers = Enqueuer(vhost), Answers()
    try:
        for n in range(2000):
            enqueuer.send(b'{"n": %d}' % n, "publish", answers.done_for(n))
        results = answers.wait(2000)
    finally:
        enqueuer.close()
    assert [n for n, error in results.items() if error is not None] == []
    assert queued(vhost) == 2000


def test_a_message_nobody_would_receive_is_reported(vhost: str):
    enqueuer, answers = Enqueuer(vhost), Answers()
    try:
        enqueuer.send(b"{}", "publish", answers.done_for(0))
        assert answers.wait(1)[0] is None
        # Someone deletes the queue: the exchange routes the next one nowhere.
        with Connection(vhost) as connection:
            connection.default_channel.queue_delete(EVENTS_QUEUE)
        enqueuer.send(b"{}", "publish", answers.done_for(1))
        error = answers.wait(2)[1]
    finally:
        enqueuer.close()
    assert isinstance(error, NotQueued) and "no queue" in str(error)


def test_connections_closed_under_load_lose_nothing_unanswered(vhost: str):
    enqueuer, answers = Enqueuer(vhost), Answers()
    try:
        for n in range(3000):
            enqueuer.send(b'{"n": %d}' % n, "publish", answers.done_for(n))
            if n in (1000, 2000):
                assert rabbit.close_connections(vhost, "test: broker connection lost") >= 1
        results = answers.wait(3000, timeout=60)
    finally:
        enqueuer.close()
    confirmed = [n for n, error in results.items() if error is None]
    # Unconfirmed ones went again on a new connection; each is in the queue (some
    # perhaps twice: sent again after a break).
    assert len(confirmed) == 3000, {str(e) for e in results.values() if e}
    assert queued(vhost) >= len(confirmed)


def test_no_broker_is_an_error_soon():
    enqueuer, answers = Enqueuer(f"amqp://guest:guest@127.0.0.1:{free_port()}//"), Answers()
    began = time.monotonic()
    try:
        enqueuer.send(b"{}", "publish", answers.done_for(0))
        error = answers.wait(1, timeout=30)[0]
    finally:
        enqueuer.close()
    assert isinstance(error, NotQueued)
    assert time.monotonic() - began < 15
