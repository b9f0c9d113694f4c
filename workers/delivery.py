"""Shared mode: each node's workers publish what every worker took in to their own router.

Consumes this node's queue `tidings.node.<node>` (bound to the fan-out
exchange `tidings.nodes`): each message is a batch of publishes, already
checked and recorded in the shared history by the worker that took them in
(workers.relay). The batch is acked once this node's router has acknowledged
all of it (workers.ledger). The queue is bounded and goes away when no worker
of the node has consumed it for a while: a node that is down grows no
backlog, and its browsers recover from the shared history.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from kombu import Consumer, Queue
from kombu.message import Message

from publisher import get_publisher
from tidings.errors import InvalidEvent
from tidings.names import node_queue
from tidings.settings import Settings
from workers.relay import decode_batch, nodes_exchange
from workers.runtime import ledger, open_ledger, settings

log = logging.getLogger(__name__)

# Batches in flight at once: each holds up to workers.relay.BATCH events.
PREFETCH = 32


def delivery_queue(config: Settings) -> Queue:
    return Queue(
        node_queue(config.node),
        nodes_exchange,
        durable=True,
        queue_arguments={
            "x-max-length-bytes": config.node_queue_bytes,
            "x-overflow": "drop-head",
            "x-expires": config.node_queue_expires * 1000,
        },
    )


class DeliveryConsumer(bootsteps.ConsumerStep):  # type: ignore[misc]
    """A Celery consumer step for this node's deliveries; idle unless in shared mode."""

    def get_consumers(self, channel: Any) -> list[Consumer]:
        config = settings()
        if not config.redis_url:
            return []
        queue = delivery_queue(config)(channel)
        queue.declare()
        channel.basic_qos(0, PREFETCH, False)
        self.queue_name = queue.name
        ledger.restart()
        return [Consumer(channel, queues=[queue], on_message=self.on_message, no_ack=False)]

    def start(self, c: Any) -> None:
        open_ledger(c.hub)
        super().start(c)

    def on_message(self, message: Message) -> None:
        entry = ledger.open(message, self.queue_name)
        try:
            outgoing = decode_batch(message.body)
        except (ValueError, TypeError) as exc:
            ledger.fail(entry, InvalidEvent(f"not a batch of publishes: {exc}"))
            return
        publisher = get_publisher(settings())
        futures = [publisher.publish_async(o.topic, o.payload, **o.options) for o in outgoing]
        ledger.expect(entry, futures)
