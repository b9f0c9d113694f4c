"""Fault 5: one subscriber stops reading its socket while events flow to it and to others.

Crossbar has no per-session queue limit: what a subscriber does not read is
buffered in the router's memory (Twisted's userland write buffer, after the
kernel's socket buffers fill). tidings bounds it: once more than
`TIDINGS_MAX_UNSENT_BYTES` (4 MiB) wait for one browser, the router drops it
and frees the buffer (router.session_limits); a client that does not read
does not answer the WebSocket auto-ping either, which drops it
`auto_ping_interval` + `auto_ping_timeout` after its last traffic when
little is sent. The others are not slowed: the router never waits for a slow
receiver. The test measures the router's resident memory (controller and
router processes) throughout, and asserts both bounds.
"""

from __future__ import annotations

import json
import time

import pytest

from harness import rabbit
from harness.memory import MemorySampler, MiB, tree_connections
from harness.processes import ROOT
from harness.producers import EventSource, Stream
from tests.faults.stalled_client import StalledSubscriber

TOPIC = "tidings.user.fault-slow"
RATE = 300.0
PAD = 4096  # bytes of filler per event: the buffered backlog grows by RATE * PAD a second
SLACK = 10.0  # seconds beyond the auto-ping bound, for a loaded machine
OUTLAST = 3.0  # seconds the stream goes on beyond the bound, so the drop happens mid-stream
UNSENT = 4 * MiB  # TIDINGS_MAX_UNSENT_BYTES, the default
# Router memory beyond its baseline while a client stalls: the unsent bound,
# and what the router holds for the events in flight (measured: see the tally).
MAX_GROWTH = UNSENT + 16 * MiB
# Seconds the reading subscribers may trail the end of the stream.
MAX_LAG = 5.0

pytestmark = pytest.mark.timeout(180)


def ping_bound() -> float:
    """Seconds after its last traffic within which the router drops a silent client."""
    config = json.loads((ROOT / ".crossbar" / "config.json").read_text())
    for transport in config["workers"][0]["transports"]:
        if transport["type"] == "web":
            options = transport["paths"]["ws"]["options"]
            return (options["auto_ping_interval"] + options["auto_ping_timeout"]) / 1000
    raise AssertionError("no WebSocket transport in .crossbar/config.json")


def test_stalled_subscriber_is_dropped_and_others_keep_up(
    own_router, vhost, start_worker, subscribe, tally
):
    bound = ping_bound()
    events = int(RATE * (bound + OUTLAST))
    start_worker(own_router, vhost)
    fast = [subscribe(own_router.ws_url, "fault-slow", [TOPIC]) for _ in range(2)]
    memory = MemorySampler(lambda: own_router.pid, interval=0.25).start()
    stalled = StalledSubscriber(own_router.ws_url, "fault-slow", TOPIC).start()
    stalled_since = time.monotonic()  # its last traffic: the SUBSCRIBE
    port = stalled.local_port

    def router_holds_it() -> bool:
        return any(
            c.raddr and c.raddr.port == port and c.status == "ESTABLISHED"
            for c in tree_connections(own_router.pid)
        )

    source = EventSource(vhost, TOPIC, pad=PAD)
    try:
        assert router_holds_it()
        time.sleep(1.0)
        baseline = memory.peak(since=memory.now() - 1.0)
        stream = Stream(source, events, RATE).start()
        stream_started = time.monotonic()
        dropped_after = None
        deadline = stalled_since + bound + SLACK + 5
        while time.monotonic() < deadline:
            if not router_holds_it():
                dropped_after = time.monotonic() - stalled_since
                break
            time.sleep(0.2)
        dropped_at = memory.now()
        stream.join(timeout=120)
        produced_in = time.monotonic() - stream_started
        expected = set(source.sent)
        for n, subscriber in enumerate(fast):
            # Missed by both: never published; by one: lost on the way to it.
            missed = [len(s.missing(expected)) for s in fast]
            subscriber.wait_all(
                expected, 60, lambda n=n, m=missed: f"#{n}, missed {m}; {rabbit.explain(vhost)}"
            )
        drained_after = max(s.last_at or 0 for s in fast) - (stream_started + produced_in)
        time.sleep(2.0)  # memory after the drop, once the buffer is freed
        after = memory.peak(since=memory.now() - 1.0)
        memory.stop()
        peak = memory.peak(until=dropped_at)

        assert dropped_after is not None, (
            f"the router still holds the stalled client after {bound + SLACK + 5:.0f}s"
        )
        assert dropped_after <= bound + SLACK
        for subscriber in fast:
            assert not subscriber.missing(expected)
            assert subscriber.connection.connects == 1, "a reading subscriber was disconnected"
        rates = [round(len(s.seen) / max(1e-3, (s.last_at or 0) - (s.first_at or 0))) for s in fast]
        tally(
            produced=len(expected),
            event_bytes=PAD + 60,
            rate_sent=round(len(expected) / produced_in),
            rate_received=rates,
            delivered=[len(s.seen) for s in fast],
            duplicates=[s.duplicates() for s in fast],
            fast_lag_after_stream_s=round(drained_after, 2),
            stalled_dropped_after_s=round(dropped_after, 1),
            ping_bound_s=bound,
            router_rss_mib_before=round(baseline / MiB),
            router_rss_mib_peak=round(peak / MiB),
            router_rss_mib_after=round(after / MiB),
        )
        assert peak - baseline < MAX_GROWTH, (
            f"the router grew by {(peak - baseline) / MiB:.0f} MiB for one stalled client"
        )
        assert drained_after < MAX_LAG, f"the others trailed the stream by {drained_after:.1f} s"
    finally:
        stalled.close()
        memory.stop()
        source.close()
