"""A hostile browser cannot hurt the router: every flood is bounded, and a bystander is served.

Each test floods a router of this module's own (small limits, so that the
floods are short), on loopback, bounded in count and time, and asserts the
bound: the router's memory, a bystander's answer time, the exact refusal.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.clients import Subscriber, attempt
from harness.memory import MiB, tree_rss
from harness.processes import Router, project_router_config
from harness.raw_wamp import RawWamp
from publisher import Publisher
from tidings.settings import Settings

ERROR, RESULT, SUBSCRIBED, CALL, SUBSCRIBE, PUBLISH, REGISTER = 8, 50, 33, 48, 32, 16, 64
SUBSCRIPTIONS, CALL_RATE, PER_ADDRESS = 50, 20, 20
ORDER_VIEW = ["entity:order:view"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    config = project_router_config()
    for transport in config["workers"][0]["transports"]:
        if transport["type"] == "web":
            transport["options"]["client_timeout"] = 2
    router = Router(
        tmp_path_factory.mktemp("limited"),
        config=config,
        TIDINGS_MAX_SUBSCRIPTIONS=str(SUBSCRIPTIONS),
        TIDINGS_CALL_RATE=str(CALL_RATE),
        TIDINGS_HELLO_TIMEOUT="1",
        TIDINGS_MAX_CONNECTIONS_PER_ADDRESS=str(PER_ADDRESS),
        TIDINGS_MAX_UNSENT_BYTES=str(1 * MiB),
    ).start()
    yield router
    router.stop()


@pytest.fixture(scope="module")
def bystander(limited: Router) -> Iterator[Subscriber]:
    """A well-behaved user whose calls must stay quick whatever the floods do."""
    user = Subscriber(limited.ws_url, "99", ["tidings.user.99"]).start()
    yield user
    user.close()


def call_seconds(user: Subscriber) -> float:
    began = time.monotonic()
    assert attempt(user.connection, lambda s: s.call("tidings.maintenance.status")) is None
    return time.monotonic() - began


class Watch:
    """Calls as the bystander every 0.1 s on a thread, keeping the slowest answer."""

    def __init__(self, user: Subscriber) -> None:
        self.user = user
        self.slowest = 0.0
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.slowest = max(self.slowest, call_seconds(self.user))
            self.calls += 1
            self._stop.wait(0.1)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def joined(router: Router, user: str = "7", perms: list[str] | None = None, **kw: Any) -> RawWamp:
    client = RawWamp(router.ws_url, **kw).open()
    client.join(user, ORDER_VIEW if perms is None else perms)
    return client


def error_uri(reply: list[Any]) -> str:
    assert reply[0] == ERROR, reply
    return str(reply[4])


def test_long_uris_and_distinct_uris_leave_nothing_behind(limited, bystander):
    client = joined(limited)
    try:
        # Before: 2,000 acknowledged publishes to distinct 50 KB URIs grew the router
        # by 95 MB (each refusal was cached). Now refused before authorization.
        before = tree_rss(limited.pid)
        with Watch(bystander) as watch:
            for n in range(2000):
                client.send([PUBLISH, n + 1, {"acknowledge": True}, f"x{n}." + "a" * 50_000, []])
            replies = [client.read() for _ in range(2000)]
            # Under the length limit, each distinct: asked of the authorizer, never kept.
            for n in range(2000):
                client.send([SUBSCRIBE, 10_000 + n, {}, f"tidings.entity.invoice.{n}"])
            denials = [client.read() for _ in range(2000)]
        assert {error_uri(r) for r in replies} == {"tidings.error.not_authorized"}
        assert {error_uri(r) for r in denials} == {"tidings.error.not_authorized"}
        client.send([CALL, 1, {}, "tidings.maintenance.status" + ".x" * 300, []])
        assert error_uri(client.read()) == "tidings.error.invalid_argument"
        grown = (tree_rss(limited.pid) - before) / MiB
        assert grown < 15, f"the router grew by {grown:.0f} MiB"
        assert watch.slowest < 1.0, f"a bystander's call took {watch.slowest:.2f} s"
    finally:
        client.close()


def test_calls_are_rate_limited_and_a_reader_that_stops_is_dropped(limited, bystander):
    # Answers of up to 48 KiB to calls of 71 bytes, and the caller never reads:
    # before, 58,200 such calls grew the router by 673 MB in 42 s.
    publisher = Publisher(Settings(router_url=limited.rs_url, backend_secret=_backend_secret()))
    publisher.start()
    try:
        for n in range(100):
            publisher.publish("tidings.user.7", {"event_id": f"e{n}", "n": n, "pad": "p" * 400})
    finally:
        publisher.close()
    client = joined(limited, rcvbuf=4096)
    try:
        before = tree_rss(limited.pid)
        with Watch(bystander) as watch:
            deadline = time.monotonic() + 15
            sent = 0
            dropped = False
            # Never reading: only a failing send says the router let go of it.
            while time.monotonic() < deadline and not dropped:
                try:
                    if sent < 20_000:
                        call = [CALL, sent + 1, {}, "tidings.history.since", ["tidings.user.7"]]
                        client.send(call)
                        sent += 1
                    else:
                        client.send([CALL, sent + 1, {}, "tidings.maintenance.status", []])
                        time.sleep(0.1)
                except OSError:
                    dropped = True
        assert dropped, f"a session that read nothing of {sent} answers was kept"
        grown = (tree_rss(limited.pid) - before) / MiB
        assert grown < 20, f"the router grew by {grown:.0f} MiB after {sent} calls"
        assert watch.slowest < 1.0, f"a bystander's call took {watch.slowest:.2f} s"
    finally:
        client.close()
    # A reader is told it calls too fast.
    caller = joined(limited)
    try:
        for n in range(3 * CALL_RATE):
            caller.send([CALL, n + 1, {}, "tidings.maintenance.status", []])
        answers = [caller.read() for _ in range(3 * CALL_RATE)]
        refused = [a for a in answers if a[0] == ERROR]
        assert refused and {error_uri(a) for a in refused} == {"tidings.error.rate_limited"}
        assert sum(1 for a in answers if a[0] == RESULT) >= CALL_RATE
    finally:
        caller.close()


def test_subscriptions_per_session_are_capped_and_freed_on_leave(limited, bystander):
    before = tree_rss(limited.pid)
    for _ in range(10):
        client = joined(limited)
        for n in range(SUBSCRIPTIONS + 5):
            client.send([SUBSCRIBE, n + 1, {}, f"tidings.entity.order.{n}"])
        replies = [client.read() for _ in range(SUBSCRIPTIONS + 5)]
        assert sum(1 for r in replies if r[0] == SUBSCRIBED) == SUBSCRIPTIONS
        assert {error_uri(r) for r in replies if r[0] == ERROR} == {"tidings.error.limit_exceeded"}
        client.close()
    # Ten sessions' subscriptions came and went: what they held is freed.
    grown = (tree_rss(limited.pid) - before) / MiB
    assert grown < 10, f"the router grew by {grown:.0f} MiB"
    assert call_seconds(bystander) < 1.0


def test_browsers_never_publish_or_register(limited):
    client = joined(limited)
    try:
        client.send([PUBLISH, 1, {"acknowledge": True}, "tidings.user.7", [{}]])
        client.send([REGISTER, 2, {}, "tidings.entity.editors"])
        assert [error_uri(client.read()) for _ in range(2)] == ["tidings.error.not_authorized"] * 2
    finally:
        client.close()


def test_idle_and_unsigned_connections_are_closed_within_seconds(limited, bystander):
    # Before: 10,200 idle connections filled max_connections for good.
    idle = [socket.create_connection(("127.0.0.1", limited.web_port)) for _ in range(200)]
    unsigned = [RawWamp(limited.ws_url).open() for _ in range(50)]
    try:
        # Meanwhile a user with a ticket joins, and the page loads.
        user = joined(limited)
        user.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(c.closed_by_router() for c in unsigned):
            time.sleep(0.2)
        assert all(c.closed_by_router() for c in unsigned), "a WebSocket without HELLO stayed"
        assert all(_closed(s, deadline) for s in idle), "an idle TCP connection stayed"
        assert call_seconds(bystander) < 1.0
    finally:
        for s in idle:
            s.close()
        for c in unsigned:
            c.close()


def test_connections_per_address_are_capped_behind_a_proxy(limited):
    behind = {"X-Forwarded-For": "198.51.100.7"}
    clients = [joined(limited, headers=behind) for _ in range(PER_ADDRESS)]
    try:
        one_more = RawWamp(limited.ws_url, headers=behind).open()
        assert one_more.closed_by_router(timeout=5)
        one_more.close()
        # Another address is not affected, nor a local tool that names none.
        joined(limited, headers={"X-Forwarded-For": "198.51.100.8"}).close()
        joined(limited).close()
    finally:
        for client in clients:
            client.close()
    # Once they left, the address may connect again.
    deadline = time.monotonic() + 5
    while True:
        try:
            joined(limited, headers=behind).close()
            break
        except (ConnectionError, RuntimeError):
            assert time.monotonic() < deadline, "the address stayed counted after leaving"
            time.sleep(0.2)


def _closed(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def _backend_secret() -> str:
    from harness.processes import TEST_BACKEND_SECRET

    return TEST_BACKEND_SECRET


def test_the_limits_are_listed_in_the_security_guide():
    guide = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    for variable in (
        "TIDINGS_MAX_URI_BYTES",
        "TIDINGS_MAX_SUBSCRIPTIONS",
        "TIDINGS_CALL_RATE",
        "TIDINGS_MAX_CALLS_IN_FLIGHT",
        "TIDINGS_MAX_UNSENT_BYTES",
        "TIDINGS_HELLO_TIMEOUT",
        "TIDINGS_MAX_CONNECTIONS_PER_ADDRESS",
    ):
        assert variable in guide, variable


def test_an_exact_decision_never_allows_a_prefix_and_a_topic_matches_whole(limited):
    # Before: Crossbar's cache keyed the decision by URI alone, so a prefix
    # subscription of `tidings.demo.prices` passed once an exact one had.
    client = joined(limited, user="7", perms=[])
    try:
        client.send([SUBSCRIBE, 1, {}, "tidings.demo.prices"])
        assert client.read()[0] == SUBSCRIBED
        client.send([SUBSCRIBE, 2, {"match": "prefix"}, "tidings.demo.prices"])
        assert error_uri(client.read()) == "tidings.error.not_authorized"
        # Before: `$` let a final newline through.
        client.send([SUBSCRIBE, 3, {}, "tidings.user.7\n"])
        assert error_uri(client.read()) == "tidings.error.not_authorized"
    finally:
        client.close()
