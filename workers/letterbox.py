"""Dead letters and hand-backs, each confirmed by the broker before the original is acked.

A message that cannot be published goes to `tidings.events.dead` with the
reason; one that failed for a passing reason goes back to the end of its
queue with its count of redeliveries raised. Both are written on a
connection of their own with publisher confirms: the original is acked only
once the broker has the copy, so a crash in between duplicates, never loses.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Producer
from kombu.message import Message

from publisher import meters
from tidings.names import (
    DEAD_INVALID,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    REASON_HEADER,
    REDELIVERIES_HEADER,
    REPLAYS_HEADER,
    ROUTING_KEY_HEADER,
    TASK_HEADER,
)
from workers.amqp_tolerance import encodable
from workers.metrics import DEAD_LETTERED
from workers.queues import dead_queue

log = logging.getLogger(__name__)

# Bounded: this runs on the consumer's loop, which must not hang on a broker in trouble.
RETRY_POLICY = {"max_retries": 3, "interval_start": 0.1, "interval_step": 0.5}


@dataclass(frozen=True)
class TaskCall:
    """What a dead-lettered task records, so that it can be replayed under its own id."""

    name: str
    id: str
    args: Any
    kwargs: Any

    def body(self) -> str:
        record = {"task": self.name, "id": self.id, "args": self.args, "kwargs": self.kwargs}
        return json.dumps(record, default=str)


def redeliveries(message: Message) -> int:
    """How often this message was handed back after a passing failure."""
    value = (message.headers or {}).get(REDELIVERIES_HEADER, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class LetterBox:
    """Writes dead letters and hand-backs with confirms; one per process, any thread."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._pid: int | None = None

    def dead_letter(
        self,
        message: Message | None,
        reason: str,
        task: TaskCall | None = None,
        code: str = DEAD_INVALID,
    ) -> None:
        """Keep `message` (or the task call) in the dead-letter queue with `reason`; `code`
        is the word for it that the metrics count (tidings.names.DEAD_LETTER_CODES)."""
        if task is not None:
            what = f"task {task.name} {task.id}"
        else:
            raw = message is not None and message.delivery_info.get("exchange") == EVENTS_EXCHANGE
            what = "raw event" if raw else "task message"
        fields = {"reason": code, "task_id": task.id if task else None}
        log.warning("dead-lettering %s: %s", what, reason, extra=fields)
        if task is not None:
            headers = {REASON_HEADER: reason, TASK_HEADER: task.name}
            replays = (message.headers or {}).get(REPLAYS_HEADER) if message else None
            if replays:
                headers[REPLAYS_HEADER] = replays  # a task that keeps coming back shows it
            self._publish(
                task.body(),
                routing_key=DEAD_QUEUE,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
            )
        else:
            assert message is not None
            self._copy(message, DEAD_QUEUE, {REASON_HEADER: reason, REDELIVERIES_HEADER: None})
        meters.add(DEAD_LETTERED[code])

    def hand_back(self, message: Message, queue: str, count: int) -> None:
        """Put a copy of `message` at the end of `queue`, marked as redelivered `count` times."""
        self._copy(message, queue, {REDELIVERIES_HEADER: count})

    def _copy(self, message: Message, queue: str, changes: dict[str, Any]) -> None:
        """Publish `message` again straight to `queue`, its headers changed (None: removed)."""
        headers = dict(message.headers or {})
        info = message.delivery_info
        routing_key = info.get("routing_key", "")
        if routing_key != queue and info.get("exchange") == EVENTS_EXCHANGE:
            # Through the default exchange, the routing key is the queue: keep
            # the one a raw event was first published with (its type), which a
            # replay sends it with again (a task message has none to keep).
            headers.setdefault(ROUTING_KEY_HEADER, routing_key)
        headers.update(changes)
        properties = message.properties or {}
        self._publish(
            message.body,
            routing_key=queue,
            headers=encodable({k: v for k, v in headers.items() if v is not None}),
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            correlation_id=properties.get("correlation_id"),
            reply_to=properties.get("reply_to"),
            priority=properties.get("priority"),
        )

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.release()
                self._connection = None

    def _publish(self, body: Any, *, routing_key: str, **properties: Any) -> None:
        with self._lock:
            connection = self._current()
            producer = Producer(connection)
            producer.publish(
                body,
                exchange="",
                routing_key=routing_key,
                declare=[dead_queue] if routing_key == DEAD_QUEUE else [],
                delivery_mode=2,
                serializer=None,
                retry=True,
                retry_policy=RETRY_POLICY,
                **{k: v for k, v in properties.items() if v is not None},
            )

    def _current(self) -> Connection:
        # A forked pool process must not share its parent's socket.
        if self._connection is None or self._pid != os.getpid():
            self._connection = self._connect()
            self._pid = os.getpid()
        return self._connection


def confirming(broker_url: str) -> Callable[[], Connection]:
    """How a LetterBox connects: publisher confirms on, so each write waits for the broker."""
    return lambda: Connection(broker_url, transport_options={"confirm_publish": True})
