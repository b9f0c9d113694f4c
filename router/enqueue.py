"""Raw events from the router into the durable pipeline: RabbitMQ with publisher confirms.

What a router-side component puts here (a chat message) takes the same way
as any producer's event: the `tidings.events` exchange, a worker, the
router. Each message is reported done only once the broker has confirmed it
(and routed it: `mandatory`), so what was answered is never lost.

One thread owns the AMQP connection. Messages that arrive while the broker
confirms earlier ones go out together and are confirmed together, so the
rate grows with the load instead of being one broker disk write per message.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp

from tidings.names import EVENTS_EXCHANGE, EVENTS_QUEUE

# A message not confirmed within this is reported failed (the sender may try again).
CONFIRM_TIMEOUT = 5.0
BATCH = 500
# While confirms are awaited, new messages wait at most this long to go out.
POLL = 0.002

Done = Callable[[BaseException | None], None]


class NotQueued(Exception):
    """The broker refused, returned or did not confirm the message."""


@dataclass
class _Item:
    body: bytes
    routing_key: str
    done: Done
    ident: str = ""
    deadline: float = 0.0
    tries: int = 1
    published: bool = False
    settled: bool = False

    def settle(self, error: BaseException | None) -> None:
        self.settled = True
        self.done(error)


class Enqueuer:
    """One confirming AMQP connection per router process, on a thread of its own."""

    def __init__(self, broker_url: str, confirm_timeout: float = CONFIRM_TIMEOUT) -> None:
        self._url = broker_url
        self._timeout = confirm_timeout
        self._items: queue.Queue[_Item | None] = queue.Queue()
        self._connection: Any = None
        self._channel: Any = None
        self._tag = 0  # the channel's last delivery tag
        self._answers: list[tuple[int, bool, BaseException | None]] = []  # confirms read
        self._returned: set[str] = set()  # message ids the broker could not route
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="tidings-enqueue", daemon=True)
        self._thread.start()

    def send(self, body: bytes, routing_key: str, done: Done) -> None:
        """Queue a persistent JSON message; `done(None)` once confirmed, else `done(error)`.
        `done` runs on the enqueuer's thread."""
        self._items.put(_Item(body, routing_key, done))

    def close(self) -> None:
        self._items.put(None)
        self._thread.join(self._timeout + 1)

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        """Publish what comes as it comes; settle each message when its confirm arrives.
        Publishing never waits for earlier confirms: the broker writes them together."""
        waiting: dict[int, _Item] = {}  # delivery tag -> message not yet confirmed
        closing = False
        while not (closing and not waiting):
            items: list[_Item] = []
            try:
                fresh = self._take(block=not waiting and not closing)
                closing = closing or None in fresh
                items = [item for item in fresh if item is not None]
                if items:
                    self._publish(items, waiting)
                if waiting:
                    self._await_confirms(waiting)
            except Exception as exc:
                self._drop()
                unsent = [item for item in items if not item.published]
                self._retry_or_fail([*waiting.values(), *unsent], exc)
                waiting.clear()
        self._drop()
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._items.get_nowait()
                if item is not None:
                    item.settle(NotQueued("the router is stopping"))

    def _take(self, block: bool) -> list[_Item | None]:
        items: list[_Item | None] = [self._items.get()] if block else []
        with contextlib.suppress(queue.Empty):
            while len(items) < BATCH:
                items.append(self._items.get_nowait())
        return items

    def _publish(self, items: list[_Item], waiting: dict[int, _Item]) -> None:
        channel = self._current()
        for item in items:
            item.ident = item.ident or str(next(self._ids))
            item.deadline = item.deadline or time.monotonic() + self._timeout
            message = amqp.Message(
                item.body,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=item.ident,
            )
            channel.basic_publish(
                message, exchange=EVENTS_EXCHANGE, routing_key=item.routing_key, mandatory=True
            )
            self._tag += 1
            waiting[self._tag] = item
            item.published = True

    def _await_confirms(self, waiting: dict[int, _Item]) -> None:
        """Read the broker's answers for a moment (new messages wait at most that long)."""
        with contextlib.suppress(socket.timeout):
            self._connection.drain_events(timeout=POLL)
        self._settle_confirmed(waiting)
        now = time.monotonic()
        for tag in [t for t, item in waiting.items() if item.deadline < now]:
            waiting.pop(tag).settle(NotQueued(f"not confirmed within {self._timeout:g} s"))

    def _settle_confirmed(self, waiting: dict[int, _Item]) -> None:
        for tag, multiple, error in self._answers:
            tags = [t for t in waiting if t <= tag] if multiple else [tag]
            for t in tags:
                item = waiting.pop(t, None)
                if item is not None:
                    unroutable = item.ident in self._returned
                    self._returned.discard(item.ident)
                    item.settle(NotQueued("no queue is bound for it") if unroutable else error)
        self._answers.clear()

    def _retry_or_fail(self, again: list[_Item], exc: BaseException) -> None:
        """After a broken connection: unconfirmed messages go once more on a new one (a
        message may then be queued twice, with its event id); a second failure is reported."""
        for item in again:
            if item.tries >= 2:
                item.settle(NotQueued(f"the broker did not confirm it: {exc}"))
            else:
                item.tries += 1
                item.published = False
                self._items.put(item)

    def _current(self) -> Any:
        if self._channel is None:
            parts = urlsplit(self._url)
            vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
            connection = amqp.Connection(
                host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
                userid=unquote(parts.username or "guest"),
                password=unquote(parts.password or "guest"),
                virtual_host=vhost,
                connect_timeout=5,
            )
            connection.connect()
            # Kept at once: if a declaration below fails, _drop() closes it (the
            # garbage collector would, much later).
            self._connection = connection
            channel = connection.channel()
            # As the workers declare them: nothing sent before the first worker is lost.
            channel.exchange_declare(EVENTS_EXCHANGE, "topic", durable=True, auto_delete=False)
            channel.queue_declare(EVENTS_QUEUE, durable=True, auto_delete=False)
            channel.queue_bind(EVENTS_QUEUE, EVENTS_EXCHANGE, "#")
            channel.confirm_select()
            channel.events["basic_ack"].add(
                lambda tag, multiple: self._answers.append((tag, multiple, None))
            )
            channel.events["basic_nack"].add(
                lambda tag, multiple: self._answers.append((tag, multiple, NotQueued("refused")))
            )
            channel.events["basic_return"].add(
                lambda exc, exchange, key, message: self._returned.add(
                    str(message.properties.get("message_id", ""))
                )
            )
            self._channel, self._tag = channel, 0
            self._answers.clear()
        return self._channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
            with contextlib.suppress(Exception):
                connection.collect()
