"""Raw events from the router into the durable pipeline: RabbitMQ with a publisher confirm.

What a router-side component puts here (a chat message) takes the same way
as any producer's event: the `tidings.events` exchange, a worker, the
router. `send` returns once the broker has confirmed the message, so what
was answered is never lost. Blocking: call it in a thread.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp

from tidings.names import EVENTS_EXCHANGE, EVENTS_QUEUE


class Enqueuer:
    """One confirming AMQP connection per router process, shared by its threads."""

    def __init__(self, broker_url: str) -> None:
        self._url = broker_url
        self._lock = threading.Lock()
        self._connection: Any = None
        self._channel: Any = None

    def send(self, body: bytes, routing_key: str) -> None:
        """Publish a persistent JSON message; returns once the broker confirmed it."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    channel = self._current()
                    message = amqp.Message(
                        body,
                        content_type="application/json",
                        content_encoding="utf-8",
                        delivery_mode=2,
                    )
                    channel.basic_publish(
                        message, exchange=EVENTS_EXCHANGE, routing_key=routing_key
                    )
                    return
                except Exception:
                    self._drop()
                    if attempt == 2:
                        raise

    def _current(self) -> Any:
        if self._channel is None:
            parts = urlsplit(self._url)
            vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
            connection = amqp.Connection(
                host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
                userid=unquote(parts.username or "guest"),
                password=unquote(parts.password or "guest"),
                virtual_host=vhost,
                confirm_publish=True,
                connect_timeout=5,
            )
            connection.connect()
            channel = connection.channel()
            # As the workers declare them: nothing sent before the first worker is dropped.
            channel.exchange_declare(EVENTS_EXCHANGE, "topic", durable=True, auto_delete=False)
            channel.queue_declare(EVENTS_QUEUE, durable=True, auto_delete=False)
            channel.queue_bind(EVENTS_QUEUE, EVENTS_EXCHANGE, "#")
            self._connection, self._channel = connection, channel
        return self._channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.collect()

    def close(self) -> None:
        with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
            if connection is not None:
                try:
                    connection.close()
                except Exception:
                    self._drop()
