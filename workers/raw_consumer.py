"""Consumes raw JSON domain events from the `tidings.events` exchange inside `celery worker`.

Each message is acked only after the router has acknowledged every publish it
stands for; an invalid one is moved to `tidings.events.dead` with its reason
(workers.ledger). Publishes are pipelined: the consumer never blocks on the
router, so heartbeats and other messages keep flowing while acknowledgements
are due.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from kombu import Consumer
from kombu.message import Message

from publisher import get_publisher
from tidings import events
from tidings.errors import InvalidEvent, PublishRefused, detached
from tidings.names import EVENTS_QUEUE
from workers import amqp_tolerance, metrics
from workers.metrics import health
from workers.queues import dead_queue, events_exchange, events_queue
from workers.runtime import ledger, open_ledger, settings, sink

log = logging.getLogger(__name__)

# Unacked raw events in flight at once. It bounds memory while the router is
# down (at most 1,024 x 60 KiB), and must cover the time from delivery to ack
# (a router round trip, then a flush) at full rate: 512 held (a') at 4,950
# events/s on two cores, 1,024 let it reach 5,400 (make bench).
PREFETCH = 1024


class RawEventConsumer(bootsteps.ConsumerStep):  # type: ignore[misc]
    """A Celery consumer step for raw domain events (see module docstring)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.consumed = 0

    def get_consumers(self, channel: Any) -> list[Consumer]:
        events_exchange(channel).declare()
        events_queue(channel).declare()
        dead_queue(channel).declare()
        channel.basic_qos(0, PREFETCH, False)
        # A consumer restart can drop the flush the hub had queued.
        ledger.restart()
        consumer = Consumer(
            channel,
            queues=[events_queue],
            on_message=self.on_message,
            on_decode_error=self.on_undecodable,
            no_ack=False,
        )
        return [consumer]

    def start(self, c: Any) -> None:
        open_ledger(c.hub)
        config = settings()
        get_publisher(config)  # connect now, not on the first event
        super().start(c)
        health.consumer, health.raw_consumers = c, list(self.consumers or ())
        health.publisher = lambda: get_publisher(config)
        health.publish_timeout = config.publish_timeout
        metrics.serve(config.worker_metrics_port)

    def on_message(self, message: Message) -> None:
        self.consumed += 1
        entry = ledger.open(message, EVENTS_QUEUE)
        unreadable = amqp_tolerance.unreadable(message)
        if unreadable:
            ledger.fail(entry, InvalidEvent(unreadable))
            return
        try:
            event = events.decode(message.body)
            given = event.get("event_id")
            default = None if given else events.derived_event_id(message.body, _message_id(message))
            futures = sink().send(events.plan(event, default))
        except InvalidEvent as exc:
            ledger.fail(entry, exc)
            return
        except Exception as exc:
            # A fault of ours must cost this message, not the consumer.
            log.exception("a raw event could not be published")
            ledger.fail(entry, PublishRefused(f"could not be published: {exc}"))
            return
        ledger.expect(entry, futures)

    def on_undecodable(self, message: Message, exc: BaseException) -> None:
        """A body kombu could not take (a `compression` header it cannot honour): the
        message is dead-lettered with the reason, in its turn."""
        self.consumed += 1
        entry = ledger.open(message, EVENTS_QUEUE)
        reason = f"the body cannot be decoded: {exc}"
        detached(exc)  # kombu re-raised it from a frame that holds it and the message
        ledger.fail(entry, InvalidEvent(reason))


def _message_id(message: Message) -> str | None:
    return (message.properties or {}).get("message_id")
