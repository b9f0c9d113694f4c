"""The Publisher and the worker ride out a router restart without losing events."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

from harness import rabbit
from harness.clients import Subscriber
from harness.processes import Worker
from harness.producers import app_client
from harness.vhost import isolated_vhost
from publisher import Publisher
from tests.support.proxy import Proxy
from tidings.settings import Settings


def test_in_process_publisher_reconnects_and_waits_for_the_router(own_router):
    config = Settings.from_environ(os.environ)
    publisher = Publisher(config.__class__(**{**config.__dict__, "router_url": own_router.rs_url}))
    publisher.start()
    sub = Subscriber(own_router.ws_url, "21", ["tidings.user.21"]).start()
    try:
        publisher.publish("tidings.user.21", {"n": 0}, timeout=10)
        sub.wait_count(1)
        sub.close()
        own_router.stop()
        deadline = time.monotonic() + 10
        while publisher.connection.joined_session() is not None:
            assert time.monotonic() < deadline, "the publisher did not notice the router left"
            time.sleep(0.05)
        # Published while the router is down: waits for the reconnect.
        acked = publisher.publish_async("tidings.user.21", {"n": 1})
        handled = threading.Event()
        publisher.connection.call_soon(handled.set)  # after the publish, on the same loop
        assert handled.wait(10)
        assert not acked.done(), "publish completed while no router could have acknowledged it"
        own_router.start()
        acked.result(timeout=30)
        assert publisher.connection.connects >= 2
    finally:
        publisher.close()


def test_tasks_sent_while_the_router_is_unreachable_arrive_once_it_is_back(
    router, broker_url, tmp_path: Path
):
    # The worker reaches the router through a link the test cuts, while the
    # subscriber stays connected: so every event must arrive, deterministically.
    # Its own vhost: the session's worker must not take these tasks past the cut link.
    with isolated_vhost(broker_url) as own_broker_url:
        link = Proxy(router.rs_port).start()
        worker = Worker(router, own_broker_url, tmp_path, TIDINGS_ROUTER_URL=link.rs_url).start()
        sub = Subscriber(router.ws_url, "22", ["tidings.user.22"]).start()
        try:
            client = app_client(own_broker_url)
            client.send_task("tidings.publish", ["tidings.user.22", {"n": -1}], queue="tidings")
            sub.wait_count(1, timeout=15)
            link.cut()
            for n in range(50):
                client.send_task("tidings.publish", ["tidings.user.22", {"n": n}], queue="tidings")
            # The worker holds them (taken, unacknowledged) and cannot get them out.
            deadline = time.monotonic() + 20
            while rabbit.queue_depths(own_broker_url).get("tidings", (0, 0))[1] == 0:
                assert time.monotonic() < deadline, rabbit.explain(own_broker_url)
                time.sleep(0.1)
            assert len(sub.payloads()) == 1, "events passed a cut link"
            link.restore()
            events = sub.wait_for(lambda evs: len({e["n"] for e in evs}) >= 51, timeout=60)
            assert {e["n"] for e in events} == set(range(-1, 50))
            assert worker.alive()
        finally:
            sub.close()
            worker.stop()
            link.close()


def test_a_publish_never_acknowledged_goes_out_again_on_a_new_connection(router):
    # A half-open link: the connection stays open and swallows everything, so
    # nothing but the Publisher's own deadline can notice.
    link = Proxy(router.rs_port).start()
    config = replace(Settings.from_environ(os.environ), router_url=link.rs_url, publish_timeout=2.0)
    publisher = Publisher(config).start()
    sub = Subscriber(router.ws_url, "22", ["tidings.user.22"]).start()
    try:
        publisher.publish("tidings.user.22", {"n": 1}, timeout=10)
        link.stall()
        began = time.monotonic()
        publisher.publish("tidings.user.22", {"n": 2}, timeout=30)
        took = time.monotonic() - began
        assert [event["n"] for event in sub.wait_count(2)] == [1, 2]
        assert 2.0 <= took < 10, took
        # Only the deadline (2 s) ended the silent connection: a second one served it.
        assert publisher.connection.connects == 2
    finally:
        sub.close()
        publisher.close()
        link.close()
