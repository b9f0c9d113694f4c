"""A browser-like WAMP client for tests: subscribes, unsubscribes and calls at will."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from autobahn.wamp.types import SubscribeOptions

from harness.clients import Subscriber


class Browser(Subscriber):
    """A Subscriber that also subscribes later, unsubscribes, calls, and gets retained events."""

    def __init__(
        self,
        url: str,
        user: str,
        topics: Iterable[str] = (),
        perms: Iterable[str] = (),
        get_retained: bool = False,
    ) -> None:
        super().__init__(url, user, topics, perms)
        self.get_retained = get_retained
        self._subscriptions: dict[str, Any] = {}

    async def _subscribe(self, session: Any) -> None:
        for topic in self.topics:
            await self._subscribe_one(session, topic)

    async def _subscribe_one(self, session: Any, topic: str, match: str | None = None) -> None:
        options = SubscribeOptions(
            match=match, details=True, get_retained=self.get_retained or None
        )
        self._subscriptions[topic] = await session.subscribe(self._on_event, topic, options=options)

    def _run(self, make: Callable[[Any], Any], timeout: float = 10) -> Any:
        async def run() -> Any:
            return await make(await self.connection.session())

        return self.connection.submit(run()).result(timeout)

    @property
    def session_id(self) -> int:
        return int(self._run(lambda session: _value(session._session_id)))

    def subscribe(self, topic: str, match: str | None = None) -> None:
        """Subscribe now (`match`: "prefix" or "wildcard"; exact by default)."""
        if match is None:
            self.topics.append(topic)  # subscribed again after a reconnect
        self._run(lambda session: self._subscribe_one(session, topic, match))

    def unsubscribe(self, topic: str) -> None:
        self.topics.remove(topic)
        subscription = self._subscriptions.pop(topic)
        self._run(lambda session: subscription.unsubscribe())

    def call(self, procedure: str, *args: Any, timeout: float = 10, **kwargs: Any) -> Any:
        return self._run(lambda session: session.call(procedure, *args, **kwargs), timeout)

    def on(self, topic: str) -> list[Any]:
        """The payloads received on one topic, in order."""
        with self._cond:
            return [p for t, p in self.events if t == topic]

    def wait_on(self, topic: str, count: int, timeout: float = 10) -> list[Any]:
        """Wait until `count` events arrived on `topic`; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(found := [p for t, p in self.events if t == topic]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.user}: {len(found)}/{count} on {topic}: {found}")
                self._cond.wait(left)
            return found


async def _value(value: Any) -> Any:
    return value
