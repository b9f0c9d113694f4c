"""The lean client against a stand-in router: CALL and its errors, and recovering sessions
that reconnect with new tickets and catch up from the history after a restart."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator

import pytest

from bench.tests.fake_router import FakeRouter
from harness.swarm import Swarm
from harness.wamp_ws import CallError, WampSubscriber

SECRET = "bench-test-secret-0123456789abcdef0123456789"
TOPIC = "tidings.entity.bench.restart"


@pytest.fixture
def router() -> Iterator[FakeRouter]:
    fake = FakeRouter().start()
    yield fake
    fake.close()


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_a_session_calls_and_hears_errors_and_a_lost_connection(router: FakeRouter) -> None:
    async def run() -> None:
        events: list[int] = []
        session = WampSubscriber(
            "127.0.0.1", router.port, "tidings", "t", TOPIC, lambda p, now: events.append(p["n"])
        )
        await asyncio.get_running_loop().create_connection(
            lambda: session, "127.0.0.1", router.port
        )
        assert await asyncio.wait_for(session.joined, 5)
        assert session.joined_at is not None
        assert "caller" in router.hellos[0]["roles"]
        await asyncio.to_thread(router.publish, 0)
        await asyncio.to_thread(router.publish, 1)
        assert [e["n"] for e in await session.call("tidings.history.since", TOPIC, None)] == [0, 1]
        assert [e["n"] for e in await session.call("tidings.history.since", TOPIC, "ep:1")] == [1]
        router.error = "tidings.error.history_gap"
        with pytest.raises(CallError) as failed:
            await session.call("tidings.history.since", TOPIC, "ep:1")
        assert failed.value.error == "tidings.error.history_gap"
        assert not session.closed.done()  # an ERROR to a CALL is not the session's end
        router.error, router.silent = None, True
        pending = session.call("tidings.history.since", TOPIC, None)
        await asyncio.to_thread(router.stop)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(pending, 5)
        await asyncio.wait_for(session.closed, 5)
        assert events == [0, 1]

    # On a thread of its own: Playwright's sync API, used earlier in a full run,
    # leaves an event loop running in the main thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result(60)


def test_recovering_sessions_rejoin_with_new_tickets_and_miss_nothing(router: FakeRouter) -> None:
    # The sessions run in a child process, with a page's backoff: the first retry after 0.5 s.
    swarm = Swarm(router.url, SECRET, 3, TOPIC, "rec", recover=True).start()
    try:
        swarm.wait_joined(30)
        assert swarm.joined == 3 and swarm.failures == {}
        for n in range(3):
            router.publish(n)
        wait_until(lambda: swarm.received.value == 9)
        stopped = time.time()
        router.stop()  # the router goes; events go on into the history only
        for n in range(3, 13):
            router.publish(n)
        time.sleep(0.3)
        router.start()
        wait_until(lambda: router.subscribers() == 3)
        for n in range(13, 15):
            router.publish(n)
        wait_until(lambda: swarm.received.value == 3 * 15)
        reports = swarm.recovery(15)
        arrivals, left = swarm.collect()
    finally:
        swarm.close()
    assert left == 0
    assert len(set(router.tickets)) == 6  # a new ticket for every sign-in
    assert len(reports) == 3
    for report in reports:
        assert report["joins"] == 2 and report["missing"] == 0
        assert report["gaps"] == 0 and report["errors"] == 0
        # What came while it was away came from the history, in pages.
        assert report["recovered"] == 10
        assert report["joined_at"] > stopped and report["caught"] >= report["joined_at"]
    assert all(int(count) == 3 for _, count, _, _ in arrivals.values())
    assert sorted(arrivals) == list(range(15))


def test_a_history_gap_is_counted(router: FakeRouter) -> None:
    swarm = Swarm(router.url, SECRET, 1, TOPIC, "gap", recover=True).start()
    try:
        swarm.wait_joined(30)
        router.publish(0)
        wait_until(lambda: swarm.received.value == 1)
        router.error = "tidings.error.history_gap"
        router.stop()
        router.publish(1)
        router.start()
        wait_until(lambda: router.subscribers() == 1)
        wait_until(lambda: swarm.recovery(2)[0]["gaps"] == 1)
        assert swarm.recovery(2)[0]["missing"] == 1
    finally:
        swarm.close()


def test_a_swarm_that_cannot_connect_says_why() -> None:
    from harness.ports import free_port

    swarm = Swarm(f"ws://127.0.0.1:{free_port()}/ws", SECRET, 2, TOPIC, "none").start()
    try:
        swarm.wait_joined(30)
    finally:
        swarm.close()
    assert swarm.joined == 0
    assert swarm.failures == {"ECONNREFUSED": 2}


def test_an_event_right_behind_subscribed_counts_and_keeps_the_session(
    router: FakeRouter,
) -> None:
    router.publish(0)
    router.greet = True
    swarm = Swarm(router.url, SECRET, 2, TOPIC, "greet", recover=True).start()
    try:
        swarm.wait_joined(30)
        wait_until(lambda: swarm.received.value == 2)
        time.sleep(0.2)
        reports = swarm.recovery(1)
    finally:
        swarm.close()
    assert [r["joins"] for r in reports] == [1, 1]
    assert [r["missing"] for r in reports] == [0, 0]


def test_a_session_answers_the_router_s_close_as_a_browser_does(router: FakeRouter) -> None:
    swarm = Swarm(router.url, SECRET, 2, TOPIC, "bye").start()
    try:
        swarm.wait_joined(30)
        router.say_goodbye(1001)
        wait_until(lambda: len(router.closes) == 2)
        assert router.closes == [b"\x03\xe9", b"\x03\xe9"]  # 1001, echoed
        wait_until(lambda: swarm.collect()[1] == 2)  # and both sessions are gone
    finally:
        swarm.close()
