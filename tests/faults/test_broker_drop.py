"""Fault 3: RabbitMQ drops every connection of the test's vhost, twice, while events flow.

Only this test's own vhost is touched (other runs share the broker). Queues
are durable and messages persistent; the producer uses publisher confirms,
so an event counts as sent only once the broker has it, and retries over a
dropped connection. The worker's consumers reconnect by themselves; what it
held unacked is redelivered.
"""

from __future__ import annotations

import re
import time

import pytest

from harness import rabbit
from harness.producers import EventSource, Stream

TOPIC = "tidings.user.fault-broker"
EVENTS = 2400
RATE = 300.0
CONNECTED = re.compile(r"Connected to \S+://")

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not rabbit.available(), reason="needs rabbitmqctl"),
]


def test_broker_connections_dropped_nothing_lost(router, vhost, start_worker, subscribe, tally):
    worker = start_worker(router, vhost)
    counter = subscribe(router.ws_url, "fault-broker", [TOPIC])
    source = EventSource(vhost, TOPIC, confirm=True)
    try:
        stream = Stream(source, EVENTS, RATE, task_every=10).start()
        closed = []
        for fraction in (0.25, 0.6):
            stream.wait_progress(int(EVENTS * fraction), timeout=60)
            before = len(source.sent)
            closed.append(rabbit.close_connections(vhost, "tidings fault test: connection dropped"))
            # Everything confirmed before the drop must come through.
            counter.wait_all(set(source.sent[:before]), 60, lambda: rabbit.explain(vhost))
        stream.join(timeout=120)
        expected = set(source.sent)
        counter.wait_all(expected, 120, lambda: rabbit.explain(vhost))
        counter.wait_quiet(1.0, timeout=10)

        assert len(expected) == EVENTS
        assert not counter.missing(expected)
        assert all(n >= 2 for n in closed), f"expected the worker's and the producer's: {closed}"
        assert worker.alive()
        # The worker is consuming again, not just alive.
        deadline = time.monotonic() + 30
        while rabbit.queue_depths(vhost)["tidings.events"] != (0, 0):
            assert time.monotonic() < deadline, rabbit.queue_depths(vhost)
            time.sleep(0.5)
        assert worker.log is not None
        # Celery's line names the broker's transport: workers.amqp_transport:Transport://...
        reconnects = sum(bool(CONNECTED.search(line)) for line in worker.log.lines) - 1
        assert reconnects >= len(closed), "the worker's consumer was not dropped and reconnected"
        # Tasks are still published by the consumer itself (workers.inline),
        # reconnects or not; Celery's pool path would log each one as received.
        lines = worker.log.lines
        pooled = sum("tidings.publish[" in line and "] received" in line for line in lines)
        assert pooled == 0, f"{pooled} tasks went through the pool"
        tally(
            produced=EVENTS,
            raw=source.raw_sent,
            tasks=source.tasks_sent,
            delivered=len(counter.seen),
            duplicates=counter.duplicates(),
            out_of_order=counter.out_of_order,
            dead_lettered=rabbit.queue_depths(vhost).get("tidings.events.dead", (0, 0))[0],
            connections_closed=closed,
            worker_reconnects=reconnects,
        )
    finally:
        source.close()
