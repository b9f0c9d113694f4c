"""Producers for the tests: an application's Celery client, one raw event, and numbered
streams of both with every id kept."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from celery import Celery
from kombu import Connection, Exchange, Producer

EVENTS = Exchange("tidings.events", type="topic", durable=True)
# Long enough to ride out a dropped broker connection, short enough to fail a test.
RETRY_POLICY = {
    "max_retries": 40,
    "interval_start": 0.1,
    "interval_step": 0.25,
    "interval_max": 1.0,
}


def app_client(broker_url: str) -> Celery:
    """A Celery client that knows nothing of tidings, as another application has."""
    return Celery("someapp", broker=broker_url, set_as_current=False)


def post_raw(
    broker_url: str, body: bytes | str | dict[str, Any], routing_key: str = "entity.updated"
) -> None:
    """One raw event on the events exchange, as a producer in any language sends it."""
    if isinstance(body, dict):
        body = json.dumps(body)
    with Connection(broker_url) as conn:
        Producer(conn.channel(), exchange=EVENTS).publish(
            body,
            routing_key=routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            declare=[EVENTS],
            delivery_mode=2,
            serializer=None,
        )


class EventSource:
    """Sends events to one topic and remembers every event id it sent.

    With `confirm=True` a send returns only once RabbitMQ has confirmed the
    message (publisher confirms), so "sent" means "the broker has it": what
    a producer must do to be sure nothing is lost when the broker connection
    drops. Not thread-safe: one source per producing thread.
    """

    def __init__(self, broker_url: str, topic: str, *, confirm: bool = False, pad: int = 0) -> None:
        self.topic = topic
        # Filler in each payload, to make events weigh something on the wire.
        self._extra = {"pad": "x" * pad} if pad else {}
        options = {"confirm_publish": True} if confirm else {}
        self._connection = Connection(broker_url, transport_options=options)
        self._producer = Producer(self._connection, exchange=EVENTS)
        self._celery = Celery("fault-producer", broker=broker_url, set_as_current=False)
        self._celery.conf.broker_transport_options = options
        self.sent: list[str] = []
        self.raw_sent = 0
        self.tasks_sent = 0
        self._declared = False

    def close(self) -> None:
        self._connection.release()
        self._celery.close()

    def raw(self, seq: int) -> str:
        """A raw `publish` domain event on the events exchange."""
        event_id = str(uuid.uuid4())
        body = {
            "event_id": event_id,
            "type": "publish",
            "topic": self.topic,
            "payload": {"seq": seq, **self._extra},
        }
        self.raw_body(json.dumps(body), "publish")
        self.sent.append(event_id)
        self.raw_sent += 1
        return event_id

    def raw_body(
        self, body: bytes | str, routing_key: str, headers: dict[str, Any] | None = None
    ) -> None:
        """Any body, valid or not, on the events exchange."""
        self._producer.publish(
            body,
            routing_key=routing_key,
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            serializer=None,
            delivery_mode=2,
            declare=[] if self._declared else [EVENTS],
            retry=True,
            retry_policy=RETRY_POLICY,
        )
        self._declared = True

    def task(self, seq: int) -> str:
        """A `tidings.publish` Celery task, as any Celery client sends it."""
        event_id = str(uuid.uuid4())
        payload = {"seq": seq, "event_id": event_id, **self._extra}
        self.send_task("tidings.publish", [self.topic, payload])
        self.sent.append(event_id)
        self.tasks_sent += 1
        return event_id

    def send_task(self, name: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> None:
        self._celery.send_task(
            name, args, kwargs or {}, queue="tidings", retry=True, retry_policy=RETRY_POLICY
        )


class Stream:
    """Sends `count` events at about `rate` per second on a thread; every `task_every`-th
    is a Celery task, the others raw events."""

    def __init__(self, source: EventSource, count: int, rate: float, task_every: int = 0) -> None:
        self.source = source
        self.count = count
        self.rate = rate
        self.task_every = task_every
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            for seq in range(self.count):
                if self.task_every and seq % self.task_every == 0:
                    self.source.task(seq)
                else:
                    self.source.raw(seq)
                ahead = started + (seq + 1) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:  # reported by join(), in the test's thread
            self.error = exc

    @property
    def progress(self) -> int:
        return len(self.source.sent)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def wait_progress(self, sent: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.progress < sent and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.progress} of {sent} events sent in {timeout}s")
            time.sleep(0.05)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(
                f"the producer did not finish in {timeout}s ({self.progress} sent)"
            )
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}") from self.error
