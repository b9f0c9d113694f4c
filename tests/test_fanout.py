"""One event to more subscribers than the router sends in one go (its dispatch chunk)."""

from __future__ import annotations

import time

from harness.processes import TEST_SECRET
from harness.producers import app_client
from harness.swarm import Swarm


def test_an_event_reaches_every_one_of_many_subscribers(router, worker, broker_url):
    # Crossbar sends to more than `event_dispatching_chunk_size` receivers in
    # chunks, and then mixes up the subscription ids when the event also
    # matches another subscription (history's prefix one): browsers got an
    # EVENT for a subscription they never made and dropped the connection.
    topic = "tidings.entity.bench.4242"
    swarm = Swarm(router.ws_url, TEST_SECRET, 150, topic, "fan").start()
    try:
        swarm.wait_joined(60)
        assert swarm.joined == 150
        app_client(broker_url).send_task(
            "tidings.publish", [topic, {"n": 1, "t": time.time()}], {}, queue="tidings"
        )
        deadline = time.monotonic() + 20
        while swarm.received.value < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        arrivals, left = swarm.collect()
        assert left == 0
        assert arrivals[1][1] == 150
    finally:
        swarm.close()
