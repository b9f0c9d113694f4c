"""Consumes raw JSON domain events from the `tidings.events` exchange inside `celery worker`.

Each message is acked only after the router has acknowledged every publish it
stands for; an invalid one is moved to `tidings.events.dead` with its reason.
Publishes are pipelined: the consumer never blocks on the router, so
heartbeats and other messages keep flowing while acknowledgements are due.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from functools import partial
from typing import Any

from celery import bootsteps
from kombu import Consumer, Producer
from kombu.message import Message

from publisher import PublishError, get_publisher
from publisher.acked import Acked
from workers import events
from workers.queues import (
    DEAD_QUEUE_NAME,
    REASON_HEADER,
    dead_queue,
    events_exchange,
    events_queue,
)

log = logging.getLogger(__name__)

# Unacked raw events in flight at once; bounds memory while the router is down.
PREFETCH = 512


class _Pending:
    """One AMQP message waiting for the router to acknowledge its publishes."""

    __slots__ = ("alone", "done", "error", "message", "remaining")

    def __init__(self, message: Message, count: int, alone: bool = False) -> None:
        self.message = message
        self.remaining = count
        self.error: str | None = None
        self.done = False
        # Acked on its own, never by a multiple=True ack (see _in_sequence).
        self.alone = alone


class RawEventConsumer(bootsteps.ConsumerStep):  # type: ignore[misc]
    """A Celery consumer step for raw domain events (see module docstring)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        # In delivery order: acks go out in order, many at once (multiple=True).
        self._inflight: deque[_Pending] = deque()
        self._flush_due = False
        self._lock = threading.Lock()
        self._hub: Any = None
        # The channel raw events arrive on, the last delivery tag seen on it,
        # and whether one was ever skipped (see _in_sequence).
        self._channel: Any = None
        self._last_tag = 0
        self._gap = False
        self._producer: Producer | None = None
        self.consumed = 0
        self.dead_lettered = 0

    def get_consumers(self, channel: Any) -> list[Consumer]:
        events_exchange(channel).declare()
        events_queue(channel).declare()
        dead_queue(channel).declare()
        channel.basic_qos(0, PREFETCH, False)
        self._producer = Producer(channel)
        # A consumer restart can drop callbacks the hub had queued (the hub
        # discards a batch when one of them raises), a pending flush among
        # them: with the flag still set, no flush would ever be scheduled again.
        with self._lock:
            self._flush_due = False
        if self._hub is not None:
            self._hub.call_soon(self._flush)
        return [Consumer(channel, queues=[events_queue], on_message=self.on_message, no_ack=False)]

    def start(self, c: Any) -> None:
        self._hub = c.hub
        get_publisher()  # connect now, not on the first event
        super().start(c)

    # -- receiving ----------------------------------------------------------
    def on_message(self, message: Message) -> None:
        self.consumed += 1
        alone = not self._in_sequence(message)
        try:
            outgoing = events.plan(events.decode(message.body))
        except events.InvalidEvent as exc:
            self._dead_letter(message, str(exc))
            return
        pending = _Pending(message, len(outgoing), alone)
        self._inflight.append(pending)
        publisher = get_publisher()
        for item in outgoing:
            try:
                future = publisher.publish_async(item.topic, item.payload, **item.options)
            except Exception as exc:  # e.g. an unknown topic: the input is at fault
                self._settle(pending, f"cannot publish: {exc}")
                continue
            if self._hub is None:
                # No event loop (an unusual pool): settle synchronously.
                self._settle(pending, _error_of(future, wait=True))
            else:
                future.add_done_callback(partial(self._on_published, pending))

    def _in_sequence(self, message: Message) -> bool:
        """Whether every earlier delivery on this message's channel reached this consumer.

        A multiple=True ack also acks deliveries this consumer never saw:
        after a connection restart the client can lose a run of deliveries
        (seen as frame errors in the log), and a batch ack past them would
        drop those events silently. Once tags skip, this channel's messages
        are acked one by one, so what was skipped is redelivered instead.
        """
        if message.channel is not self._channel:
            self._channel, self._last_tag, self._gap = message.channel, 0, False
        tag = int(message.delivery_tag)
        if tag != self._last_tag + 1 and not self._gap:
            self._gap = True
            log.warning(
                "raw-event deliveries %d to %d never reached the consumer; "
                "acking one by one on this channel so that they come back",
                self._last_tag + 1,
                tag - 1,
            )
        self._last_tag = max(self._last_tag, tag)
        return not self._gap

    # -- settling (publisher thread → consumer thread) -----------------------
    def _on_published(self, pending: _Pending, future: Acked) -> None:
        with self._lock:
            pending.remaining -= 1
            error = _error_of(future)
            if error and not pending.error:
                pending.error = error
            if pending.remaining:
                return
            pending.done = True
            if self._flush_due:
                return  # the flush already scheduled will take this one too
            self._flush_due = True
        # AMQP channels are not thread-safe: ack on the consumer's own loop.
        self._hub.call_soon(self._flush)

    def _settle(self, pending: _Pending, error: str | None) -> None:
        pending.remaining -= 1
        if error and not pending.error:
            pending.error = error
        if pending.remaining <= 0:
            with self._lock:
                pending.done = True
            self._flush()

    def _flush(self) -> None:
        """Settle the settled messages at the head of the line; ack a run of good ones
        with one multiple=True ack on its last. Never past an unsettled one: that
        would ack an event the router has not acknowledged."""
        last_good: _Pending | None = None
        with self._lock:
            self._flush_due = False
            ready = []
            while self._inflight and self._inflight[0].done:
                ready.append(self._inflight.popleft())
        for pending in ready:
            if pending.error or pending.alone:
                if last_good is not None:
                    self._ack_through(last_good)
                    last_good = None
                self._finish(pending)
            elif last_good is not None and last_good.message.channel is not pending.message.channel:
                # Redelivered on a new channel after a reconnect: tags start over.
                self._ack_through(last_good)
                last_good = pending
            else:
                last_good = pending
        if last_good is not None:
            self._ack_through(last_good)

    def _ack_through(self, pending: _Pending) -> None:
        try:
            pending.message.ack(multiple=True)
        except Exception:
            # The channel died since delivery; RabbitMQ redelivers the messages.
            log.warning("could not ack raw events; they will be redelivered", exc_info=True)

    def _finish(self, pending: _Pending) -> None:
        try:
            if pending.error:
                self._dead_letter(pending.message, pending.error)
            else:
                pending.message.ack()
        except Exception:
            # The channel died since delivery; RabbitMQ redelivers the message.
            log.warning("could not settle a raw event; it will be redelivered", exc_info=True)

    def _dead_letter(self, message: Message, reason: str) -> None:
        log.warning("dead-lettering raw event: %s", reason)
        assert self._producer is not None
        properties = message.properties or {}
        # Publish first, then ack: a crash in between duplicates, never loses.
        self._producer.publish(
            message.body,
            exchange="",
            routing_key=DEAD_QUEUE_NAME,
            headers={
                **(message.headers or {}),
                REASON_HEADER: reason,
                "x-tidings-routing-key": message.delivery_info.get("routing_key", ""),
            },
            content_type=message.content_type or properties.get("content_type"),
            content_encoding=message.content_encoding,
            delivery_mode=2,
            serializer=None,
        )
        message.ack()
        self.dead_lettered += 1


def _error_of(future: Acked, wait: bool = False) -> str | None:
    try:
        if wait:
            future.result()
        error = future.exception()
    except Exception as exc:
        return _describe(exc)
    return _describe(error) if error else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PublishError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
