"""Fault 2: the worker is SIGKILLed mid-stream and a new one starts.

Raw events and Celery tasks are acked only after the router acknowledged
them, so whatever the killed worker held unacked goes back to the queue and
the new worker publishes it: nothing is lost, and what the killed worker had
already published before it could ack arrives twice (same event_id).
"""

from __future__ import annotations

import time

import pytest

from tests.faults import rabbit
from tests.faults.producers import EventSource, Stream

TOPIC = "tidings.user.fault-worker"
EVENTS = 3000
# Faster than one worker publishes: a backlog builds, so the worker holds a
# full prefetch of unacked messages when it dies.
RATE = 2000.0

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not rabbit.available(), reason="needs rabbitmqctl"),
]


def test_worker_sigkill_mid_stream_nothing_lost(router, vhost, start_worker, subscribe, tally):
    first = start_worker(router, vhost)
    counter = subscribe(router.ws_url, "fault-worker", [TOPIC])
    source = EventSource(vhost, TOPIC)
    try:
        stream = Stream(source, EVENTS, RATE, task_every=10).start()
        deadline = time.monotonic() + 60
        while counter.received < EVENTS // 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counter.received >= EVENTS // 5, "the first worker published nothing"
        first.kill()  # SIGKILL: no warm shutdown, no acks sent on the way out
        seen_at_kill = counter.received
        # RabbitMQ requeues a dead connection's unacked messages: none stay unacked.
        deadline = time.monotonic() + 30
        while True:
            depths = rabbit.queue_depths(vhost)
            if depths["tidings.events"][1] == 0 and depths["tidings"][1] == 0:
                break
            assert time.monotonic() < deadline, f"still unacked after the kill: {depths}"
            time.sleep(0.5)
        requeued = depths["tidings.events"][0] + depths["tidings"][0]

        second = start_worker(router, vhost)
        stream.join(timeout=60)
        expected = set(source.sent)
        counter.wait_all(expected, 120, lambda: rabbit.explain(vhost))
        counter.wait_quiet(1.0, timeout=10)

        assert len(expected) == EVENTS
        assert not counter.missing(expected)
        assert second.alive()
        depths = rabbit.queue_depths(vhost)
        assert depths["tidings.events"] == (0, 0) and depths["tidings"] == (0, 0), depths
        tally(
            produced=EVENTS,
            raw=source.raw_sent,
            tasks=source.tasks_sent,
            delivered=len(counter.seen),
            duplicates=counter.duplicates(),
            out_of_order=counter.out_of_order,
            dead_lettered=depths.get("tidings.events.dead", (0, 0))[0],
            seen_at_kill=seen_at_kill,
            in_queue_after_kill=requeued,
        )
    finally:
        source.close()
