"""Fault 6, the soak: many events through one worker, the router restarted twice on the way.

`make test` runs 10,000 events; `make soak` (marker `soak`) runs 100,000.
The final count must be exact (every event_id seen; duplicates counted), and
the resident memory of the worker and of each router process must stay flat.
As in the router-down test, the worker reaches the router through a link held
cut from each stop until the counting subscriber is back (see there why).
"""

from __future__ import annotations

import time
from statistics import linear_regression

import pytest

from harness import rabbit
from harness.memory import MiB, tree_rss
from harness.producers import EventSource, Stream

TOPIC = "tidings.user.fault-soak"
RATE = 600.0  # per second; one event in TASK_EVERY is a Celery task
TASK_EVERY = 20
CHECKPOINTS = 4  # memory readings per router process
# "Flat": growth of a process from its first reading to its last, and the
# slope of a line fitted through its readings against events delivered. A
# leak of 1 KiB per event is 100 MB over the 100k soak; the slope catches it
# at 10k, where the growth bound alone would let 4 KiB per event pass.
MAX_GROWTH = 40 * MiB
MAX_BYTES_PER_EVENT = 1024


def bytes_per_event(delivered: list[int], rss: list[int]) -> float:
    """The slope of the least-squares line through (delivered, rss)."""
    return linear_regression(delivered, rss).slope


def restart_router(router, link, counter) -> float:
    """Stop and start the router; let the worker back in once the subscriber is."""
    began = time.monotonic()
    subscribed = counter.subscriptions
    router.stop()
    link.cut()
    router.start()
    counter.wait_subscribed(subscribed + 1, timeout=60)
    link.restore()
    return time.monotonic() - began


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(10_000, marks=pytest.mark.timeout(300), id="10k"),
        pytest.param(100_000, marks=[pytest.mark.soak, pytest.mark.timeout(1200)], id="100k"),
    ],
)
def test_soak_router_restarted_twice_exact_count_flat_memory(
    events, own_router, link, vhost, start_worker, subscribe, tally
):
    worker = start_worker(own_router, vhost, TIDINGS_ROUTER_URL=link.rs_url)
    counter = subscribe(own_router.ws_url, "fault-soak", [TOPIC])
    source = EventSource(vhost, TOPIC)
    # Memory is read at checkpoints of delivered events: CHECKPOINTS per
    # router process, the router restarted after the first two processes.
    router_rss: list[list[int]] = [[], [], []]
    worker_rss: list[int] = []
    points: list[int] = []  # events delivered at each reading
    outages = []
    step = events // (3 * CHECKPOINTS)
    try:
        started = time.monotonic()
        stream = Stream(source, events, RATE, task_every=TASK_EVERY).start()
        for life, readings in enumerate(router_rss):
            for point in range(1, CHECKPOINTS + 1):
                delivered = (life * CHECKPOINTS + point) * step
                counter.wait_received(delivered, timeout=max(120, events / 50))
                readings.append(tree_rss(own_router.pid))
                worker_rss.append(tree_rss(worker.pid))
                points.append(delivered)
            if life < 2:
                outages.append(round(restart_router(own_router, link, counter), 1))
        stream.join(timeout=events / 50)
        expected = set(source.sent)
        counter.wait_all(expected, max(120, events / 100), lambda: rabbit.explain(vhost))
        elapsed = time.monotonic() - started
        counter.wait_quiet(1.0, timeout=10)

        assert len(expected) == events
        assert not counter.missing(expected)
        assert len(counter.seen) == events
        assert worker.alive()
        # Growth from the first reading of each process (warmed up by then) to its last.
        router_growth = [readings[-1] - readings[0] for readings in router_rss]
        worker_growth = worker_rss[-1] - worker_rss[1]
        # The router's per process; the worker's from its second router on (it
        # reconnected once by then, and holds what a reconnect allocates).
        router_slopes = [
            bytes_per_event(points[n * CHECKPOINTS : (n + 1) * CHECKPOINTS], readings)
            for n, readings in enumerate(router_rss)
        ]
        worker_slope = bytes_per_event(points[CHECKPOINTS:], worker_rss[CHECKPOINTS:])
        tally(
            produced=events,
            raw=source.raw_sent,
            tasks=source.tasks_sent,
            delivered=len(counter.seen),
            duplicates=counter.duplicates(),
            out_of_order=counter.out_of_order,
            dead_lettered=0,
            seconds=round(elapsed),
            rate=round(events / elapsed),
            router_outages_s=outages,
            worker_rss_mib=[round(rss / MiB) for rss in worker_rss],
            router_rss_mib=[[round(rss / MiB) for rss in readings] for readings in router_rss],
            worker_bytes_per_event=round(worker_slope),
            router_bytes_per_event=[round(slope) for slope in router_slopes],
        )
        assert worker_growth < MAX_GROWTH, worker_rss
        assert all(growth < MAX_GROWTH for growth in router_growth), router_rss
        assert worker_slope < MAX_BYTES_PER_EVENT, f"the worker grows {worker_slope:.0f} B/event"
        assert max(router_slopes) < MAX_BYTES_PER_EVENT, (
            f"the router grows {max(router_slopes):.0f} B/event"
        )
    finally:
        source.close()
