"""The load generator: senders for each path, driven at a fixed rate or as fast as delivery allows.

Every event's payload carries its number and its enqueue time, so the
receiving side can compute rates and latencies on its own clock.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import amqp
from autobahn.wamp.types import PublishOptions
from celery import Celery

from bench.wire import Wire
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings import tickets
from tidings.names import BACKEND_AUTHID, CHAT_SEND_PROCEDURE, EVENTS_EXCHANGE, REALM, TASK_QUEUE


def payload(n: int) -> dict[str, Any]:
    return {"n": n, "t": time.time()}


class Sender(Protocol):
    def send(self, n: int) -> None: ...

    def flush(self) -> None:
        """Let what `send` queued go out (the drive calls it after each batch)."""

    def close(self) -> None: ...


class TaskSender:
    """Enqueues a Celery task per event: the message Celery's `send_task` would send
    (protocol 2, JSON, persistent), published on one channel.

    The headers come from Celery once; sending itself skips `send_task`'s
    per-call routing and pool work, which took as much CPU as the worker's
    own task on this two-core machine and so crowded out what is measured.
    """

    def __init__(self, broker_url: str, task: str, topic: str) -> None:
        self.task = task
        self.topic = topic
        self._wire = Wire(broker_url)
        self._channel = self._wire.channel
        app = Celery("bench-producer", broker=broker_url, set_as_current=False)
        template = app.amqp.as_task_v2("0", task, args=[topic, {}])
        self._headers = dict(template.headers)
        self._embed = template.body[2]

    def send(self, n: int) -> None:
        task_id = str(uuid.uuid4())
        headers = {**self._headers, "id": task_id, "root_id": task_id, "argsrepr": f"(#{n})"}
        body = json.dumps([[self.topic, payload(n)], {}, self._embed])
        message = self._channel.prepare_message(
            body,
            0,
            "application/json",
            "utf-8",
            headers,
            {"delivery_mode": 2, "correlation_id": task_id, "reply_to": ""},
        )
        self._wire.publish(message, TASK_QUEUE, TASK_QUEUE)

    def flush(self) -> None:
        self._wire.flush()

    def close(self) -> None:
        self._wire.close()


class RawSender:
    """Posts a raw JSON `publish` domain event per event to the `tidings.events` exchange."""

    def __init__(self, broker_url: str, topic: str, prefix: str = "bench") -> None:
        self.topic = topic
        self.prefix = prefix  # of the event ids: `<prefix>-<n>`
        self._wire = Wire(broker_url)
        # Every message has the same properties: encoded once.
        template = self._wire.channel.prepare_message(
            b"", 0, "application/json", "utf-8", {}, {"delivery_mode": 2}
        )
        self._properties = template.properties
        self._encoded = template._serialize_properties()

    def send(self, n: int) -> None:
        body = json.dumps(
            {
                "event_id": f"{self.prefix}-{n}",
                "type": "publish",
                "topic": self.topic,
                "payload": payload(n),
            }
        )
        self._wire.publish(
            _Encoded(body.encode(), self._properties, self._encoded), EVENTS_EXCHANGE, "publish"
        )

    def flush(self) -> None:
        self._wire.flush()

    def close(self) -> None:
        self._wire.close()


class _Encoded(amqp.Message):  # type: ignore[misc]
    """A message whose properties were encoded before (they are the same for every event)."""

    def __init__(self, body: bytes, properties: dict[str, Any], encoded: bytes) -> None:
        super().__init__(body, **properties)
        self._encoded = encoded

    def _serialize_properties(self) -> bytes:
        return self._encoded


class DirectSender:
    """(d): one persistent backend session publishing straight to the router, acknowledged.

    Events are handed to the session's loop in batches, so the loop publishes
    back to back and the ceiling is the router's, not a thread hand-off's.
    """

    def __init__(self, router_url: str, backend_secret: str, topic: str) -> None:
        self.topic = topic
        self.connection = WampConnection(
            router_url,
            REALM,
            Credentials(BACKEND_AUTHID, "wampcra", backend_secret),
            name="bench-direct",
        ).start()
        self.connection.wait_joined(15)
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._options = PublishOptions(acknowledge=True)
        self.errors = 0

    def send(self, n: int) -> None:
        with self._lock:
            self._pending.append(payload(n))
            if self._scheduled:
                return
            self._scheduled = True
        self.connection.call_soon(self._flush)

    def _flush(self) -> None:
        session = self.connection.joined_session()
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            self._scheduled = False
        for item in batch:
            if session is None:
                self.errors += 1
                continue
            future = session.publish(self.topic, item, options=self._options)
            future.add_done_callback(self._on_ack)

    def _on_ack(self, future: Any) -> None:
        if future.exception() is not None:
            self.errors += 1

    def flush(self) -> None:
        pass  # each send is handed over at once

    def close(self) -> None:
        self.connection.close()


class ChatSender:
    """Chat messages to one room through `tidings.chat.send`, as browsers send them: from
    `users` sessions in turn (the router bounds each session's message rate), the number
    and send time as the text. Errors (refusals included) are counted."""

    def __init__(self, ws_url: str, secret: str, room: str, users: int) -> None:
        self.room = room
        perms = [f"chat:{room}:join"]

        def ticket_of(user: str) -> Callable[[], str]:
            return lambda: tickets.issue(secret, user, perms, 3600)

        self.connections = [
            WampConnection(
                ws_url,
                REALM,
                Credentials(None, "ticket", ticket_of(f"chat-{room}-{i}")),
                name=f"bench-chat-{i}",
            ).start()
            for i in range(users)
        ]
        for connection in self.connections:
            connection.wait_joined(15)
        self.errors = 0
        self.answered = 0
        self.first_error = ""

    def send(self, n: int) -> None:
        connection = self.connections[n % len(self.connections)]
        connection.call_soon(self._send, connection, json.dumps(payload(n)))

    def _send(self, connection: WampConnection, text: str) -> None:
        session = connection.joined_session()
        if session is None:
            self.errors += 1
            return
        session.call(CHAT_SEND_PROCEDURE, self.room, text).add_done_callback(self._on_answer)

    def _on_answer(self, future: Any) -> None:
        error = future.exception()
        if error is not None:
            self.errors += 1
            self.first_error = self.first_error or str(getattr(error, "error", error))
        else:
            self.answered += 1

    def flush(self) -> None:
        pass  # each send is handed over at once

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


@dataclass
class Driven:
    """What a drive did: how many events, when it started and stopped (epoch seconds),
    and (time, delivered so far) samples taken every quarter second."""

    sent: int
    started: float
    stopped: float
    samples: list[tuple[float, int]]


def drive(
    sender: Sender,
    seconds: float,
    *,
    delivered: Callable[[], int],
    rate: float | None = None,
    window: int = 1000,
    tick: Callable[[float], None] = lambda fraction: None,
) -> Driven:
    """Send for `seconds`: at `rate` events/s, or (rate None) as fast as delivery allows,
    never more than `window` events ahead of the subscriber so that queues stay short."""
    started = time.time()
    began = time.monotonic()
    end = began + seconds
    next_tick = began
    samples: list[tuple[float, int]] = []
    n = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_tick:
            samples.append((time.time(), delivered()))
            tick((now - began) / seconds)
            next_tick += 0.25
        if rate is not None:
            due = int((now - began) * rate) + 1
            while n < due:
                sender.send(n)
                n += 1
            sender.flush()
            # Sleep to the next event's due time; the scheduler's jitter is part of real life.
            time.sleep(max(0.0, began + n / rate - time.monotonic()))
            continue
        room = window - (n - delivered())
        if room <= 0:
            time.sleep(0.0005)
            continue
        for _ in range(min(room, 64)):
            sender.send(n)
            n += 1
        sender.flush()
    samples.append((time.time(), delivered()))
    tick(1.0)
    return Driven(n, started, time.time(), samples)


def drain(delivered: Callable[[], int], sent: int, timeout: float) -> bool:
    """Wait until `sent` events were delivered; False if time ran out first."""
    deadline = time.monotonic() + timeout
    while delivered() < sent:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
