"""Missed-event recovery: the last events of each topic, and `tidings.history.since`.

A router-side component (`.crossbar/config.json`) subscribes to every
`tidings.` topic whose catalogue entry has `history=True` and keeps the last
TIDINGS_HISTORY_SIZE events of each. Crossbar's own event history is not used:
it loses events when a topic has several subscribers, and checks no
permissions on reading.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions, SubscribeOptions

from publisher import access, topics
from publisher.callers import (
    INVALID_ARGUMENT,
    NOT_AUTHORIZED,
    SessionDirectory,
    browser_errors,
)
from tidings.settings import settings

log = logging.getLogger(__name__)

SINCE_PROCEDURE = "tidings.history.since"
HISTORY_GAP = "tidings.error.history_gap"
# A browser refuses WebSocket messages above 64 KiB (.crossbar/config.json):
# one answer stays below that, and the client asks again from its last event.
MAX_ANSWER_BYTES = 48 * 1024
# What one held event costs beyond its JSON text: the bytes object, the id
# string and the dict slot (measured with tracemalloc, see README).
EVENT_OVERHEAD = 160


class HistoryGap(LookupError):
    """The event asked for is no longer held (or never was): the client must reload."""


class EventHistory:
    """The last `size` events of each topic, for at most `max_topics` topics and `max_bytes`.

    Events are held as compact JSON (a few hundred bytes for an entity event,
    a third of the same payload as Python objects). When a bound is reached,
    the topic that has been quiet the longest is dropped whole; a client that
    asks for it gets a gap and reloads, which is always safe.
    """

    def __init__(self, size: int = 100, max_topics: int = 10_000, max_bytes: int = 64 << 20):
        self.size = size
        self.max_topics = max_topics
        self.max_bytes = max_bytes
        self.bytes = 0
        # topic → (event id → JSON); both ordered oldest first.
        self._topics: OrderedDict[str, dict[str, bytes]] = OrderedDict()

    def add(self, topic: str, payload: dict[str, Any]) -> bool:
        """Hold an event; False if it has no `event_id` or is a duplicate (a redelivery)."""
        event_id = payload.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            return False
        events = self._topics.get(topic)
        if events is None:
            events = self._topics[topic] = {}
        elif event_id in events:
            return False
        self._topics.move_to_end(topic)
        blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        events[event_id] = blob
        self.bytes += _cost(event_id, blob)
        if len(events) > self.size:
            oldest = next(iter(events))
            self.bytes -= _cost(oldest, events.pop(oldest))
        while len(self._topics) > 1 and (
            len(self._topics) > self.max_topics or self.bytes > self.max_bytes
        ):
            self._drop_oldest_topic()
        return True

    def since(
        self, topic: str, after_event_id: str | None, max_bytes: int = MAX_ANSWER_BYTES
    ) -> list[dict[str, Any]]:
        """Events after `after_event_id`, oldest first (all held ones if it is None).

        Raises HistoryGap when that event is not held, so events may have been
        missed. The answer stops before `max_bytes`; ask again from its last event.
        """
        events = self._topics.get(topic, {})
        if after_event_id is not None and after_event_id not in events:
            raise HistoryGap(topic)
        answer: list[dict[str, Any]] = []
        size = 0
        found = after_event_id is None
        for event_id, blob in events.items():
            if not found:
                found = event_id == after_event_id
                continue
            size += len(blob)
            if answer and size > max_bytes:
                break
            answer.append(json.loads(blob))
        return answer

    def held(self) -> int:
        return sum(len(events) for events in self._topics.values())

    def __len__(self) -> int:
        return len(self._topics)

    def _drop_oldest_topic(self) -> None:
        _, events = self._topics.popitem(last=False)
        self.bytes -= sum(_cost(event_id, blob) for event_id, blob in events.items())


def _cost(event_id: str, blob: bytes) -> int:
    return len(blob) + len(event_id) + EVENT_OVERHEAD


def keeps_history(uri: str) -> bool:
    found = topics.lookup(uri)
    return found is not None and found[0].history


class History(ApplicationSession):  # type: ignore[misc]
    """The router-side history component; registers `tidings.history.since`."""

    async def onJoin(self, details: Any) -> None:
        config = settings()
        self.history = EventHistory(
            config.history_size, config.history_topics, config.history_bytes
        )
        self.directory = SessionDirectory(self)
        await self.directory.attach()
        # One prefix subscription sees every event; the catalogue says which to keep.
        await self.subscribe(
            self._on_event, "tidings.", options=SubscribeOptions(match="prefix", details=True)
        )
        await self.register(
            self.since, SINCE_PROCEDURE, options=RegisterOptions(details_arg="details")
        )
        log.info(
            "history ready: %d events per topic, at most %d topics and %d bytes",
            config.history_size,
            config.history_topics,
            config.history_bytes,
        )

    def _on_event(self, *args: Any, details: Any = None, **kwargs: Any) -> None:
        topic = getattr(details, "topic", None)
        payload = args[0] if args else kwargs
        if isinstance(topic, str) and isinstance(payload, dict) and keeps_history(topic):
            self.history.add(topic, payload)

    @browser_errors
    async def since(
        self, topic: Any = None, after_event_id: Any = None, details: Any = None
    ) -> list[dict[str, Any]]:
        """`tidings.history.since(topic, after_event_id)`: the events missed since that one."""
        if not isinstance(topic, str) or not keeps_history(topic):
            raise ApplicationError(INVALID_ARGUMENT, "topic has no history (publisher/topics.py)")
        if after_event_id is not None and not isinstance(after_event_id, str):
            raise ApplicationError(INVALID_ARGUMENT, "after_event_id must be an event id string")
        caller = await self.directory.caller(details)
        if not caller.is_backend and not access.may_subscribe(caller.authid, caller.perms, topic):
            raise ApplicationError(NOT_AUTHORIZED, f"no permission to read {topic}")
        try:
            return self.history.since(topic, after_event_id)
        except HistoryGap:
            raise ApplicationError(
                HISTORY_GAP,
                f"event {after_event_id} of {topic} is no longer held; reload the data",
            ) from None
