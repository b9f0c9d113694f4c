"""Real WAMP clients for tests: a browser-like subscriber authenticated with a ticket."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from autobahn.wamp.types import SubscribeOptions

from harness.processes import TEST_SECRET
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings import tickets
from tidings.names import REALM


def ticket(user: str, perms: Iterable[str] = (), ttl: int = 300) -> str:
    return tickets.issue(TEST_SECRET, user, list(perms), ttl)


class Subscriber:
    """Subscribes over WebSocket like a browser does, and records every event.

    Each (re)connect fetches a fresh one-time ticket and subscribes again.
    """

    def __init__(
        self,
        url: str,
        user: str,
        topics: Iterable[str],
        perms: Iterable[str] = (),
        match: str = "exact",
    ) -> None:
        self.user = user
        self.topics = list(topics)
        self.perms = list(perms)
        self.match = match
        self.events: list[tuple[str, Any]] = []
        self._cond = threading.Condition()
        self.connection = WampConnection(
            url,
            REALM,
            Credentials(None, "ticket", lambda: ticket(self.user, self.perms)),
            name=f"test-subscriber-{user}",
            on_join=self._subscribe,
            max_backoff=0.5,
        )

    async def _subscribe(self, session: Any) -> None:
        for topic in self.topics:
            await session.subscribe(
                self._on_event, topic, options=SubscribeOptions(match=self.match, details=True)
            )

    def _on_event(self, *args: Any, details: Any = None, **kwargs: Any) -> None:
        payload = args[0] if args else kwargs
        with self._cond:
            self.events.append((details.topic if details else "", payload))
            self._cond.notify_all()

    def start(self, timeout: float = 10) -> Subscriber:
        self.connection.start()
        self.connection.wait_joined(timeout)
        return self

    def close(self) -> None:
        self.connection.close()

    def payloads(self) -> list[Any]:
        with self._cond:
            return [p for _, p in self.events]

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 10) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate([p for _, p in self.events]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s; {len(self.events)} events: {self.events[-5:]}"
                    )
                self._cond.wait(left)
            return [p for _, p in self.events]

    def wait_count(self, count: int, timeout: float = 10) -> list[Any]:
        return self.wait_for(lambda events: len(events) >= count, timeout)


def refusal(url: str, credentials: Credentials, timeout: float = 5) -> str:
    """Connect once and return the router's refusal (error URI and message)."""
    conn = WampConnection(url, REALM, credentials, name="test-refused").start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn.is_joined:
                raise AssertionError("the router accepted credentials it should refuse")
            if conn.last_error:
                return conn.last_error
            time.sleep(0.02)
        raise AssertionError("no answer from the router")
    finally:
        conn.close()


def attempt(conn: WampConnection, action: Callable[[Any], Any], timeout: float = 10) -> str | None:
    """Run `action(session)` on the session's loop; None if it succeeded, else the error URI."""

    async def run() -> str | None:
        try:
            await action(await conn.session())
        except Exception as exc:
            return str(getattr(exc, "error", repr(exc)))
        return None

    return conn.submit(run()).result(timeout)
