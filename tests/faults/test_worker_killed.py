"""Fault 2: the worker is SIGKILLed while it holds messages the router has not acknowledged.

Raw events and Celery tasks are acked only after the router acknowledged
them. The test holds the worker's link to the router (its publishes go out,
nothing comes back), so the worker is sure to hold a backlog unacked when it
is killed; RabbitMQ puts it back, the next worker publishes it, and every
event the first one held arrives: nothing is lost.
"""

from __future__ import annotations

import time

import pytest

from harness import rabbit
from harness.producers import EventSource, Stream

TOPIC = "tidings.user.fault-worker"
EVENTS = 3000
RATE = 1000.0

pytestmark = [pytest.mark.timeout(180)]


def unacked(vhost: str) -> int:
    depths = rabbit.queue_depths(vhost)
    return depths["tidings.events"][1] + depths["tidings"][1]


def test_worker_sigkill_mid_stream_nothing_lost(
    own_router, link, vhost, start_worker, subscribe, tally
):
    first = start_worker(own_router, vhost, TIDINGS_ROUTER_URL=link.rs_url)
    counter = subscribe(own_router.ws_url, "fault-worker", [TOPIC])
    source = EventSource(vhost, TOPIC)
    try:
        stream = Stream(source, EVENTS, RATE, task_every=10).start()
        deadline = time.monotonic() + 60
        while counter.received < EVENTS // 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counter.received >= EVENTS // 10, "the first worker published nothing"
        # From now on the router's acknowledgements do not reach the worker.
        link.stall()
        deadline = time.monotonic() + 30
        while (held := unacked(vhost)) < 200:
            assert time.monotonic() < deadline, f"the worker holds only {held} unacked"
            time.sleep(0.1)
        not_yet_seen = set(source.sent) - counter.seen.keys()
        first.kill()  # SIGKILL: no warm shutdown, no acks sent on the way out
        seen_at_kill = counter.received
        # RabbitMQ puts back what the dead connection held.
        deadline = time.monotonic() + 30
        while unacked(vhost):
            assert time.monotonic() < deadline, "still unacked after the kill"
            time.sleep(0.2)
        depths = rabbit.queue_depths(vhost)
        requeued = depths["tidings.events"][0] + depths["tidings"][0]
        assert requeued >= held, f"{held} were held, {requeued} came back"

        second = start_worker(own_router, vhost)  # straight to the router
        stream.join(timeout=60)
        expected = set(source.sent)
        counter.wait_all(expected, 120, lambda: rabbit.explain(vhost))
        counter.wait_quiet(1.0, timeout=10)

        assert len(expected) == EVENTS
        assert not counter.missing(expected)
        assert not_yet_seen <= counter.seen.keys()  # every id it held came
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
            held_unacked_at_kill=held,
            seen_at_kill=seen_at_kill,
            requeued=requeued,
        )
    finally:
        source.close()
