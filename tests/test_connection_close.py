"""A closed WAMP connection gives back its socket and loop at once, and leaves nothing hanging."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os

import pytest

from harness.processes import TEST_BACKEND_SECRET
from publisher import Publisher
from publisher.connection import ConnectionClosed, WampConnection
from publisher.credentials import Credentials
from tidings.errors import PublishTimeout
from tidings.names import BACKEND_AUTHID, REALM
from tidings.settings import Settings


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_opened_and_closed_leave_no_descriptors_behind(router):
    # A worker collects garbage rarely (workers.heap): what close() leaves to the
    # collector stays open, and a task that connects each time used up the
    # router's 256 backend connections within seconds.
    credentials = Credentials(BACKEND_AUTHID, "wampcra", TEST_BACKEND_SECRET)
    gc.disable()
    try:
        before = _open_descriptors()
        for n in range(20):
            connection = WampConnection(router.rs_url, REALM, credentials, name=f"close-{n}")
            connection.start().wait_joined(10)
            connection.close()
        never_started = WampConnection(router.rs_url, REALM, credentials, name="never")
        never_started.close()
        assert _open_descriptors() <= before
    finally:
        gc.enable()


def test_closing_completes_every_publish_and_leaves_the_session_cleanly(router, caplog):
    config = Settings.from_environ(os.environ)
    publisher = Publisher(dataclasses.replace(config, router_url=router.rs_url)).start()
    publisher.connection.wait_joined(10)
    caplog.set_level(logging.INFO, logger="publisher")
    futures = [publisher.publish_async("tidings.user.1", {"n": n}) for n in range(500)]
    publisher.close()
    # The router acknowledges what came before the GOODBYE it answers: none is
    # left waiting, none fails for the close.
    for future in futures:
        assert future.exception(timeout=5) is None
    assert not [r for r in caplog.records if "transport_lost" in r.getMessage()]
    late = publisher.publish_async("tidings.user.1", {"n": -1})
    assert isinstance(late.exception(timeout=0), PublishTimeout)
    with pytest.raises(ConnectionClosed):
        publisher.connection.wait_joined(1)
