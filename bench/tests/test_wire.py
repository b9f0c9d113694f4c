"""The bench's producers write batches: every event arrives whole and in order; closing ends."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kombu import Connection

from bench.load import RawSender
from harness.broker import rabbitmq_url
from workers.queues import events_exchange, events_queue


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with rabbitmq_url() as url:
        yield url


def test_raw_events_sent_in_batches_arrive_whole_and_in_order(broker_url: str) -> None:
    count = 500
    with Connection(broker_url) as connection:
        channel = connection.default_channel
        events_exchange(channel).declare()
        queue = events_queue(channel)
        queue.declare()
        queue.purge()
        sender = RawSender(broker_url, "tidings.entity.bench.1", prefix="wire")
        for n in range(count):
            sender.send(n)
            if n % 64 == 63:
                sender.flush()
        sender.close()  # writes the rest; must not wait for an answer it never asked for
        got = []
        while (message := queue.get(no_ack=True)) is not None:
            got.append(message)
        assert [json.loads(m.body)["event_id"] for m in got] == [f"wire-{n}" for n in range(count)]
        assert {m.content_type for m in got} == {"application/json"}
        assert {m.properties["delivery_mode"] for m in got} == {2}
