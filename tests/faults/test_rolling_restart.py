"""A rolling restart under load: a new worker starts, the old one gets SIGTERM mid-stream.

The old worker stops taking messages, finishes the publishes it has in
flight, acks them and exits: every event arrives, and none twice (a message
handed back after the router had it would arrive again).
"""

from __future__ import annotations

import signal
import time

import pytest

from harness import rabbit
from harness.producers import EventSource, Stream
from tests.support.proxy import Proxy

TOPIC = "tidings.user.fault-rolling"
# Six seconds of stream: the old worker is stopped in its middle even on a slow machine.
EVENTS = 9000
RATE = 1500.0

pytestmark = [pytest.mark.timeout(180)]


def test_a_rolling_restart_loses_nothing_and_duplicates_nothing(
    own_router, vhost, start_worker, subscribe, tally
):
    # The old worker hears the router's acknowledgements late, so that it surely has
    # publishes in flight (delivered, not yet acknowledged) when it is told to stop.
    slow = Proxy(own_router.rs_port, answer_delay=0.2).start()
    old = start_worker(own_router, vhost, TIDINGS_ROUTER_URL=slow.rs_url)
    counter = subscribe(own_router.ws_url, "fault-rolling", [TOPIC])
    source = EventSource(vhost, TOPIC)
    try:
        # Tasks, every one: the path Celery's own warm shutdown knows least about.
        stream = Stream(source, EVENTS, RATE, task_every=1).start()
        deadline = time.monotonic() + 60
        while counter.received < EVENTS // 6:
            assert time.monotonic() < deadline, f"only {counter.received} arrived"
            time.sleep(0.02)
        deadline = time.monotonic() + 30
        while (held := rabbit.queue_depths(vhost)["tidings"][1]) < 200:
            assert time.monotonic() < deadline, (
                f"the old worker holds only {held} unacked ({len(source.sent)} sent)"
            )
            time.sleep(0.1)
        new = start_worker(own_router, vhost)
        began = time.monotonic()
        old.signal(signal.SIGTERM)
        assert old.proc is not None
        code = old.proc.wait(30)
        stopped_in = time.monotonic() - began
        assert code == 0, f"the old worker exited with {code}"

        stream.join(timeout=60)
        expected = set(source.sent)
        counter.wait_all(expected, 120, lambda: rabbit.explain(vhost))
        counter.wait_quiet(1.0, timeout=10)
        assert not counter.missing(expected)
        assert counter.duplicates() == 0
        assert new.alive()
        depths = rabbit.queue_depths(vhost)
        assert depths["tidings"] == (0, 0) and depths["tidings.events"] == (0, 0), depths
        tally(
            produced=EVENTS,
            delivered=len(counter.seen),
            duplicates=counter.duplicates(),
            unacked_at_sigterm=held,
            old_worker_stopped_s=round(stopped_in, 1),
        )
    finally:
        source.close()
        slow.close()
