"""A closed WAMP connection gives back its socket and loop at once, not at the next collection."""

from __future__ import annotations

import gc
import os

from harness.processes import TEST_BACKEND_SECRET
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings.names import BACKEND_AUTHID, REALM


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
