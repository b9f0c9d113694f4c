"""Shared mode: what a worker takes in is recorded in the shared history, then sent to every node.

With several router nodes (TIDINGS_REDIS_URL), the worker that takes a task
or a raw event from the shared queues does not publish it to its own router.
On a thread of its own it records the events in the shared history (one
Redis round trip for a batch: each gets its position), then publishes the
batch as one message to the fan-out exchange `tidings.nodes`, with a
publisher confirm; only then does the ledger ack what was taken in. Each
node's workers take the batches from that node's queue and publish them to
their router (workers.delivery).

While Redis or RabbitMQ cannot be reached the batch is tried again, with
backoff: the messages wait unacked in the worker (nothing lost) and go on
when they are back.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kombu import Connection, Exchange, Producer

from publisher.acked import Acked
from stores.history import RedisHistory
from tidings import catalogue
from tidings.events import Outgoing
from tidings.names import NODES_EXCHANGE

log = logging.getLogger(__name__)

BATCH = 500
RETRY_FIRST, RETRY_MAX = 0.2, 5.0
nodes_exchange = Exchange(NODES_EXCHANGE, type="fanout", durable=True)


def keeps_history(item: Outgoing) -> bool:
    """Events meant for some users only stay out of the history, which answers anyone."""
    return catalogue.keeps_history(item.topic) and not item.options.get("eligible_authids")


class Relay:
    """Records and fans out what the consumer takes in (see the module docstring)."""

    def __init__(self, history: RedisHistory, connect: Callable[[], Connection]) -> None:
        self._history = history
        self._connect = connect
        self._waiting: deque[tuple[list[Outgoing], Acked]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None
        self._pid = os.getpid()
        self.batches = 0

    def send(self, outgoing: list[Outgoing]) -> list[Acked]:
        """Hand over one message's publishes; the future completes once every node will
        get them (any thread)."""
        done = Acked()
        with self._cond:
            if self._pid != os.getpid():
                # A forked pool process: nothing of the parent's connection or thread.
                self._pid, self._connection, self._thread = os.getpid(), None, None
                self._waiting.clear()
            self._waiting.append((outgoing, done))
            self._cond.notify()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
                self._thread.start()
        return [done]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                batch = [self._waiting.popleft() for _ in range(min(BATCH, len(self._waiting)))]
            self._deliver(batch)

    def _deliver(self, batch: list[tuple[list[Outgoing], Acked]]) -> None:
        delay = RETRY_FIRST
        items = [item for outgoing, _ in batch for item in outgoing]
        while True:
            try:
                body = self._record(items)
                self._publish(body)
                break
            except Exception as exc:
                # Redis or the broker is away: the messages stay unacked meanwhile.
                log.warning(
                    "cannot relay %d events (%s); trying again in %.1f s", len(items), exc, delay
                )
                self._drop_connection()
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        self.batches += 1
        for _, done in batch:
            done.set_result()

    def _record(self, items: list[Outgoing]) -> bytes:
        kept = [item for item in items if keeps_history(item)]
        texts = [json.dumps(item.payload, separators=(",", ":")) for item in kept]
        positions = self._history.record(
            [
                (item.topic, item.payload["event_id"], text)
                for item, text in zip(kept, texts, strict=True)
            ],
            catalogue.history_size,
        )
        placed = {id(item): where for item, where in zip(kept, positions, strict=True)}
        return json.dumps(
            [
                [item.topic, _placed(item.payload, placed.get(id(item))), item.options]
                for item in items
            ],
            separators=(",", ":"),
        ).encode()

    def _publish(self, body: bytes) -> None:
        if self._connection is None:
            self._connection = self._connect()
        producer = Producer(self._connection)
        producer.publish(
            body,
            exchange=nodes_exchange,
            routing_key="",
            declare=[nodes_exchange],
            content_type="application/json",
            content_encoding="utf-8",
            serializer=None,
            delivery_mode=2,
        )

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:
                log.debug("closing the relay's connection failed", exc_info=True)
            self._connection = None


def _placed(payload: dict[str, Any], where: str | None) -> dict[str, Any]:
    return payload if where is None else {**payload, "position": where}


def decode_batch(body: bytes | str) -> list[Outgoing]:
    """A batch message of `tidings.nodes` back to its publishes."""
    return [Outgoing(topic, payload, options) for topic, payload, options in json.loads(body)]
