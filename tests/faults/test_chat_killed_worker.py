"""Fault: a chat message answered by `tidings.chat.send` survives a worker SIGKILLed right after.

The answer comes once RabbitMQ has confirmed the message. The worker's link
to the router is cut, so it takes the message and cannot publish it; then it
is killed. RabbitMQ puts the message back and the next worker delivers it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import rabbit
from harness.processes import Router, Worker
from tests.support.browser import Browser
from tests.support.proxy import Proxy

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def chat_router(vhost: str, tmp_path: Path) -> Iterator[Router]:
    """A router whose chat enqueues on this test's vhost."""
    router = Router(tmp_path / "router", TIDINGS_BROKER_URL=vhost).start()
    yield router
    router.stop()


def wait(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_an_answered_message_survives_a_worker_killed_right_after(
    chat_router: Router, vhost: str, start_worker: Callable[..., Worker], tally
):
    room = f"r{uuid.uuid4().hex[:8]}"
    topic = f"tidings.chat.{room}"
    perms = [f"chat:{room}:join"]
    link = Proxy(chat_router.rs_port).start()
    alice = Browser(chat_router.ws_url, "1", [], perms).start()
    bob = Browser(chat_router.ws_url, "2", [topic], perms).start()
    try:
        first = start_worker(chat_router, vhost, TIDINGS_ROUTER_URL=link.rs_url)
        warm = alice.call("tidings.chat.send", room, "before")["event_id"]
        assert [m["event_id"] for m in bob.wait_on(topic, 1)] == [warm]

        link.cut()  # the worker can take messages, not publish them
        sent = alice.call("tidings.chat.send", room, "answered, then the worker dies")
        wait(
            lambda: rabbit.queue_depths(vhost)["tidings.events"][1] >= 1,
            "the worker never took the message",
        )
        first.kill()
        assert len(bob.on(topic)) == 1, "published although the link was cut"

        start_worker(chat_router, vhost)  # straight to the router
        got = bob.wait_on(topic, 2, timeout=30)[1]
        assert got["event_id"] == sent["event_id"]
        assert (got["from"], got["text"]) == ("1", "answered, then the worker dies")
        tally(answered=1, held_by_killed_worker=1, delivered_after_restart=1)
    finally:
        alice.close()
        bob.close()
        link.close()
