"""A browser-like client that rides out a lost router as the demo page does: it signs in again
(on the next router of its list if its own is gone), subscribes again, and asks
`tidings.history.since` for what each topic missed; duplicates are dropped by `event_id`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import SubscribeOptions

from harness.clients import ticket
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings.names import REALM

# Seconds without a joined session before trying the next router.
FAILOVER_AFTER = 1.5


class Topic:
    """What was received on one topic, and where to resume: after the last event of an
    unbroken run of positions (shared mode), else after the last event."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.epoch: str | None = None
        self.run = 0  # every offset up to this one was received
        self.above: set[int] = set()

    def saw(self, event: dict[str, Any]) -> None:
        self.last_id = event.get("event_id") or self.last_id
        where = event.get("position")
        if not isinstance(where, str) or ":" not in where:
            return
        epoch, _, text = where.rpartition(":")
        offset = int(text)
        if epoch != self.epoch:
            self.epoch, self.run, self.above = epoch, offset, set()
            return
        self.above.add(offset)
        while self.run + 1 in self.above:
            self.run += 1
            self.above.discard(self.run)

    def resume_from(self) -> str | None:
        return f"{self.epoch}:{self.run}" if self.epoch else self.last_id


class Recovering:
    def __init__(
        self, urls: Iterable[str], user: str, topics: Iterable[str], perms: Iterable[str] = ()
    ) -> None:
        self.urls = list(urls)
        self.user = user
        self.perms = list(perms)
        self.topics = {topic: Topic() for topic in topics}
        self.events: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.recovered = 0
        self.gaps: list[str] = []
        self.joins = 0
        self.on: int = 0  # index of the router in use
        self._lock = threading.Condition()
        self._connection: WampConnection | None = None
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._failover, daemon=True, name="failover")

    def start(self, timeout: float = 15) -> Recovering:
        self._connect(0)
        assert self._connection is not None
        self._connection.wait_joined(timeout)
        self._watch.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._connection is not None:
            self._connection.close()

    @property
    def connection(self) -> WampConnection:
        assert self._connection is not None
        return self._connection

    def wait_all(self, event_ids: Iterable[str], timeout: float = 30) -> None:
        wanted = set(event_ids)
        deadline = time.monotonic() + timeout
        with self._lock:
            while not wanted <= self.events.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = wanted - self.events.keys()
                    raise AssertionError(f"{self.user}: {len(missing)} events missing")
                self._lock.wait(min(left, 0.5))

    # -- connecting ----------------------------------------------------------------
    def _connect(self, index: int) -> None:
        self.on = index % len(self.urls)
        credentials = Credentials(None, "ticket", lambda: ticket(self.user, self.perms))
        self._connection = WampConnection(
            self.urls[self.on],
            REALM,
            credentials,
            name=f"recovering-{self.user}",
            on_join=self._joined,
            max_backoff=0.5,
        ).start()

    def _failover(self) -> None:
        down_since: float | None = None
        while not self._stop.wait(0.2):
            if self._connection is not None and self._connection.is_joined:
                down_since = None
                continue
            down_since = down_since or time.monotonic()
            if len(self.urls) > 1 and time.monotonic() - down_since > FAILOVER_AFTER:
                old = self._connection
                self._connect(self.on + 1)
                if old is not None:
                    old.close(timeout=1)
                down_since = None

    async def _joined(self, session: Any) -> None:
        self.joins += 1
        for topic in self.topics:
            await session.subscribe(self._live, topic, options=SubscribeOptions(details=True))
        for topic, state in self.topics.items():
            await self._catch_up(session, topic, state)

    async def _catch_up(self, session: Any, topic: str, state: Topic) -> None:
        after = state.resume_from()
        while True:
            try:
                missed = await session.call("tidings.history.since", topic, after)
            except ApplicationError as exc:
                if exc.error == "tidings.error.history_gap":
                    self.gaps.append(topic)
                    return
                raise
            if not missed:
                return
            for event in missed:
                if self._record(topic, event):
                    self.recovered += 1
            after = missed[-1].get("position") or missed[-1]["event_id"]

    def _live(self, event: dict[str, Any], details: Any = None) -> None:
        self._record(details.topic if details else "", event)

    def _record(self, topic: str, event: dict[str, Any]) -> bool:
        with self._lock:
            state = self.topics.get(topic)
            if state is not None:
                state.saw(event)
            event_id = event.get("event_id")
            if event_id in self.events:
                self.duplicates += 1
                return False
            self.events[str(event_id)] = event
            self._lock.notify_all()
            return True
