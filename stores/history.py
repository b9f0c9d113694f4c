"""Missed-event history in Redis: a capped stream per topic with an epoch and increasing offsets.

Shared mode (TIDINGS_REDIS_URL): the worker that takes an event in records it
here before the event's message is acked, and every router node answers
`tidings.history.since` from here, so a router restart or another node loses
nothing. An event is recorded once: a redelivered one keeps its offset. Each
topic's keys live `ttl` seconds after its last event; the epoch is new when
they are made again, so that a position of the old stream is a gap, never a
wrong answer.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from tidings.errors import HistoryGap

# KEYS: log (stream), ids (sorted set: event id by offset), meta (epoch, top).
# ARGV: event id, JSON, cap, ttl seconds, an epoch if the topic is new.
# Returns {epoch, offset, 1 if recorded now else 0}. Ids are kept for twice the
# cap: a client whose last event just left the stream has missed nothing yet.
_RECORD = """
local epoch = redis.call('HGET', KEYS[3], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[3], 'epoch', epoch, 'top', 0)
end
local known = redis.call('ZSCORE', KEYS[2], ARGV[1])
if known then
  return {epoch, tonumber(known), 0}
end
local offset = redis.call('HINCRBY', KEYS[3], 'top', 1)
local cap = tonumber(ARGV[3])
redis.call('XADD', KEYS[1], 'MAXLEN', cap, offset .. '-1', 'i', ARGV[1], 'd', ARGV[2])
redis.call('ZADD', KEYS[2], offset, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', offset - 2 * cap)
for i = 1, 3 do
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return {epoch, offset, 1}
"""

# How many entries one read of the stream takes.
_PAGE = 100


def position(epoch: str, offset: int) -> str:
    """What an event carries of its place in its topic's history: `<epoch>:<offset>`."""
    return f"{epoch}:{offset}"


def _keys(topic: str) -> list[str]:
    # One hash tag per topic: a Redis Cluster keeps a topic's keys together.
    return [f"tidings:h:{{{topic}}}:{part}" for part in ("log", "ids", "meta")]


class RedisHistory:
    """The shared history; blocking calls (run them off an event loop)."""

    blocking = True

    def __init__(self, url: str, size: int = 100, ttl: int = 86_400) -> None:
        import redis

        self.size = size
        self.ttl = ttl
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._record = self._redis.register_script(_RECORD)

    def __repr__(self) -> str:
        return "Redis streams tidings:h:{topic}:*"

    def record(
        self,
        events: Sequence[tuple[str, str, str]],
        size_of: Callable[[str], int | None] | None = None,
    ) -> list[str]:
        """Record (topic, event id, JSON) each, in one round trip; their positions. Each topic
        keeps its last `size_of(topic)` events (None: the store's size)."""
        if not events:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for topic, event_id, text in events:
            epoch = secrets.token_hex(4)
            size = (size_of(topic) if size_of else None) or self.size
            self._record(_keys(topic), [event_id, text, size, self.ttl, epoch], client=pipe)
        return [position(_text(epoch), int(offset)) for epoch, offset, _ in pipe.execute()]

    def since(self, topic: str, after: str | None, max_bytes: int) -> list[dict[str, Any]]:
        """The events after `after` (an event id or a position), oldest first, each with its
        position; all that is held if `after` is None. Raises HistoryGap if events may
        have been missed: not held any more, or the stream was made anew since."""
        log, ids, meta = _keys(topic)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(meta, "epoch")
        pipe.zscore(ids, after or "")
        pipe.xrange(log, "-", "+", count=1)
        epoch_raw, known, first = pipe.execute()
        if epoch_raw is None:
            if after is None:
                return []
            raise HistoryGap(topic)
        epoch = _text(epoch_raw)
        start = 0 if after is None else self._offset_of(after, epoch, known, topic)
        oldest = _offset(first[0][0]) if first else start + 1
        if after is not None and start < oldest - 1:
            raise HistoryGap(topic)  # more than the cap came since
        return self._read(log, epoch, start, max_bytes)

    @staticmethod
    def _offset_of(after: str, epoch: str, known: Any, topic: str) -> int:
        if known is not None:
            return int(known)
        held_epoch, _, offset = after.rpartition(":")
        if held_epoch == epoch and offset.isdigit():
            return int(offset)
        raise HistoryGap(topic)

    def _read(self, log: str, epoch: str, start: int, max_bytes: int) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = []
        size = 0
        cursor = f"({start}-1" if start else "-"
        while True:
            entries: Any = self._redis.xrange(log, cursor, "+", count=_PAGE)
            for entry_id, fields in entries:
                data = fields[b"d"]
                size += len(data)
                if answer and size > max_bytes:
                    return answer
                event = json.loads(data)
                event["position"] = position(epoch, _offset(entry_id))
                answer.append(event)
            if len(entries) < _PAGE:
                return answer
            cursor = f"({_text(entries[-1][0])}"


def _offset(entry_id: bytes | str) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
