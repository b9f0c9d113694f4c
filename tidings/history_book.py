"""The last events of each topic, held compactly and bounded: the store behind the history."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from tidings.errors import HistoryGap

# A browser refuses WebSocket messages above 64 KiB (.crossbar/config.json):
# one answer stays below that, and the client asks again from its last event.
MAX_ANSWER_BYTES = 48 * 1024
# What one held event costs beyond its JSON text and id (the bytes and str
# objects, the dict slot), and what a topic costs (its name, dict, LRU slot):
# measured with tracemalloc, see README "Missed-event recovery".
EVENT_OVERHEAD = 120
TOPIC_OVERHEAD = 290


class EventHistory:
    """The last `size` events of each topic, for at most `max_topics` topics and `max_bytes`.

    Events are held as compact JSON: about 330 bytes for an entity event, where
    the same payload as Python objects takes 1.1 KB. When a bound is reached,
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

    def add(self, topic: str, payload: dict[str, Any], size: int | None = None) -> bool:
        """Hold an event, and the last `size` of its topic (default: the book's); False if it
        has no `event_id` or is a duplicate (a redelivery)."""
        event_id = payload.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            return False
        events = self._topics.get(topic)
        if events is None:
            events = self._topics[topic] = {}
            self.bytes += len(topic) + TOPIC_OVERHEAD
        elif event_id in events:
            return False
        self._topics.move_to_end(topic)
        blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        events[event_id] = blob
        self.bytes += _cost(event_id, blob)
        while len(events) > (size or self.size):
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
        topic, events = self._topics.popitem(last=False)
        self.bytes -= len(topic) + TOPIC_OVERHEAD
        self.bytes -= sum(_cost(event_id, blob) for event_id, blob in events.items())


def _cost(event_id: str, blob: bytes) -> int:
    return len(blob) + len(event_id) + EVENT_OVERHEAD
