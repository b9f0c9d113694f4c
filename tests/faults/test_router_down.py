"""Fault 1: the router stops for about five seconds while events flow, then comes back.

How "nothing lost" is checked honestly: a subscriber connected to a router
that restarts is disconnected too, and misses whatever the worker publishes
between the router's return and its own re-subscription. The history
(`tidings.history.since`) cannot close that gap here: it lives in the
router's memory, so a restart answers `history_gap` and a browser reloads.
That gap is the browser's, not the pipeline's. So the worker reaches the
router through a link the test holds cut from the moment the router stops
until the counting subscriber has subscribed again on the new router. The
router really goes down (SIGTERM, then a new process) and the worker's
Publisher really loses its session and reconnects by itself; only the moment
it may do so is ordered.
"""

from __future__ import annotations

import time

import pytest

from harness import rabbit
from harness.producers import EventSource, Stream

TOPIC = "tidings.user.fault-router"
EVENTS = 2400
RATE = 300.0  # per second: the stream lasts eight seconds and spans the outage
DOWN = 5.0  # seconds the router stays stopped; booting again adds a few more

pytestmark = pytest.mark.timeout(180)


def test_router_down_five_seconds_nothing_lost(
    own_router, link, vhost, start_worker, subscribe, tally
):
    worker = start_worker(own_router, vhost, TIDINGS_ROUTER_URL=link.rs_url)
    counter = subscribe(own_router.ws_url, "fault-router", [TOPIC])
    source = EventSource(vhost, TOPIC)
    try:
        # One event in ten is a Celery task: tasks retry, raw events wait.
        stream = Stream(source, EVENTS, RATE, task_every=10).start()
        stream.wait_progress(EVENTS // 5, timeout=60)
        down = time.monotonic()
        own_router.stop()
        link.cut()
        time.sleep(max(0.0, DOWN - (time.monotonic() - down)))
        own_router.start()
        router_down = time.monotonic() - down
        counter.wait_subscribed(2, timeout=30)
        link.restore()
        stream.join(timeout=120)
        expected = set(source.sent)
        counter.wait_all(expected, 120, lambda: rabbit.explain(vhost))
        counter.wait_quiet(1.0, timeout=10)

        assert len(expected) == EVENTS
        assert not counter.missing(expected)
        assert worker.alive()
        assert worker.log is not None
        joins = sum(" joined tidings at " in line for line in worker.log.lines)
        assert joins >= 2, "the worker's Publisher did not reconnect"
        tally(
            produced=EVENTS,
            raw=source.raw_sent,
            tasks=source.tasks_sent,
            delivered=len(counter.seen),
            duplicates=counter.duplicates(),
            out_of_order=counter.out_of_order,
            dead_lettered=0,
            router_down_s=round(router_down, 1),
            publisher_joins=joins,
        )
    finally:
        source.close()
