"""A browser-like subscriber that counts every event_id it receives, for the fault tests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from autobahn.wamp.types import SubscribeOptions

from harness.clients import ticket
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings.names import REALM


class CountingSubscriber:
    """Subscribes over WebSocket with a ticket and counts deliveries per event_id.

    Only counters are kept, never the payloads, so that a soak of 100,000
    events costs a few megabytes. Each (re)connect takes a fresh ticket and
    subscribes again; `subscriptions` counts the completed (re)subscriptions so
    that a test can wait until the subscriber is back before letting events
    flow again.
    """

    def __init__(self, url: str, user: str, topics: Iterable[str], perms: Iterable[str] = ()):
        self.user = user
        self.topics = list(topics)
        self.perms = list(perms)
        self.seen: Counter[str] = Counter()
        self.received = 0
        # How often an event's `seq` was lower than the one before it on its topic.
        self.out_of_order = 0
        self.subscriptions = 0
        # When the first and the latest event arrived (time.monotonic()).
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._last_seq: dict[str, int] = {}
        self._cond = threading.Condition()
        self.connection = WampConnection(
            url,
            REALM,
            Credentials(None, "ticket", lambda: ticket(self.user, self.perms)),
            name=f"counting-subscriber-{user}",
            on_join=self._subscribe,
            max_backoff=0.5,
        )

    async def _subscribe(self, session: Any) -> None:
        for topic in self.topics:
            await session.subscribe(self._on_event, topic, options=SubscribeOptions(details=True))
        with self._cond:
            self.subscriptions += 1
            self._cond.notify_all()

    def _on_event(self, payload: Any = None, *_: Any, details: Any = None, **__: Any) -> None:
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        seq = payload.get("seq") if isinstance(payload, dict) else None
        topic = details.topic if details is not None else ""
        now = time.monotonic()
        with self._cond:
            self.received += 1
            self.first_at = self.first_at or now
            self.last_at = now
            self.seen[str(event_id)] += 1
            if isinstance(seq, int):
                if seq < self._last_seq.get(topic, -1):
                    self.out_of_order += 1
                self._last_seq[topic] = seq
            self._cond.notify_all()

    # -- lifecycle ------------------------------------------------------------
    def start(self, timeout: float = 20) -> CountingSubscriber:
        self.connection.start()
        self.wait_subscribed(1, timeout)
        return self

    def close(self) -> None:
        self.connection.close()

    def wait_subscribed(self, count: int, timeout: float) -> None:
        """Wait until the subscriber has (re)subscribed `count` times in all."""
        self._wait(lambda: self.subscriptions >= count, timeout, f"subscription #{count}")

    # -- counting -------------------------------------------------------------
    def missing(self, expected: Iterable[str]) -> set[str]:
        with self._cond:
            return {event_id for event_id in expected if event_id not in self.seen}

    def duplicates(self) -> int:
        """Deliveries beyond the first, over all event ids."""
        with self._cond:
            return self.received - len(self.seen)

    def wait_received(self, count: int, timeout: float) -> None:
        """Wait until `count` events (duplicates included) have arrived."""
        self._wait(lambda: self.received >= count, timeout, f"{count} events")

    def wait_all(
        self, expected: set[str], timeout: float, explain: Callable[[], object] | None = None
    ) -> None:
        """Wait until every expected event id has been seen at least once.

        `explain` adds to a failure what may say where the missing ones are
        (queue depths, say).
        """
        # Counting the seen ones among the expected is O(n) per check: check at
        # most every 0.2 s, not on every event.
        deadline = time.monotonic() + timeout
        while True:
            missing = self.missing(expected)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.user}: {len(missing)} of {len(expected)} events never arrived within "
                    f"{timeout}s (received {self.received}, e.g. missing {sorted(missing)[:3]})"
                    + (f"; {explain()}" if explain else "")
                )
            time.sleep(0.2)

    def wait_quiet(self, quiet: float, timeout: float) -> None:
        """Wait until nothing has arrived for `quiet` seconds (late duplicates)."""
        deadline = time.monotonic() + timeout
        last = -1
        changed = time.monotonic()
        while time.monotonic() < deadline:
            if self.received != last:
                last, changed = self.received, time.monotonic()
            elif time.monotonic() - changed >= quiet:
                return
            time.sleep(0.1)

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what} "
                        f"(last error: {self.connection.last_error})"
                    )
                self._cond.wait(left)
