"""The Celery tasks of the contract: publish, entity_changed and maintenance."""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import Future
from typing import Any

from celery import Task
from celery.signals import worker_init
from celery.worker.request import Request
from kombu.asynchronous import get_event_loop

from publisher import PublishError, PublishTimeout, get_publisher
from workers import events
from workers.celery_app import app
from workers.queues import DEAD_QUEUE_NAME, REASON_HEADER, dead_queue

log = logging.getLogger(__name__)
MAX_RETRY_DELAY = 30.0


# The worker's main process, where the consumer and its event loop (hub) live.
_consumer_pid: int | None = None


@worker_init.connect
def _remember_consumer_process(**_: Any) -> None:
    global _consumer_pid
    _consumer_pid = os.getpid()


class _AckAfterRouter:
    """Tasks that returned while their publishes are in flight, acked as the router acks.

    A pool thread then never sleeps on the router's round trip: it returns at
    once and takes the next task, and the ack goes out (on the consumer's loop,
    as AMQP channels are not thread-safe) once every publish is acknowledged.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[Future[None]]] = {}
        self._settled: list[tuple[AckAfterPublish, BaseException | None]] = []
        self._lock = threading.Lock()

    def can_defer(self) -> bool:
        # Only where the task runs in the consumer's process (threads or solo
        # pool): a prefork child cannot reach the parent's channel.
        return os.getpid() == _consumer_pid and get_event_loop() is not None

    def wait_for(self, task_id: str, futures: list[Future[None]]) -> None:
        with self._lock:
            self._waiting[task_id] = futures

    def take(self, task_id: str) -> list[Future[None]] | None:
        with self._lock:
            return self._waiting.pop(task_id, None)

    def settle_when_done(self, request: AckAfterPublish, futures: list[Future[None]]) -> None:
        hub = get_event_loop()
        assert hub is not None  # can_defer() said so
        remaining = [len(futures)]

        def done(future: Future[None]) -> None:
            with self._lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
                error = next((f.exception() for f in futures if f.exception()), None)
                self._settled.append((request, error))
            # Scheduled every time, not once per batch: the hub drops queued
            # callbacks when one of them raises (on a lost connection), and a
            # dropped flush must not leave every later ack waiting for good.
            # The hub wakes once for any number of them; a flush finding
            # nothing settled costs next to nothing.
            hub.call_soon(self._flush)

        for future in futures:
            future.add_done_callback(done)

    def _flush(self) -> None:
        with self._lock:
            settled, self._settled = self._settled, []
        for request, error in settled:
            request.settle(error)


after_router = _AckAfterRouter()


class AckAfterPublish(Request):  # type: ignore[misc]
    """A task request whose ack waits for the router's acknowledgements (see above)."""

    def acknowledge(self) -> None:
        futures = after_router.take(self.id)
        if futures is None:
            super().acknowledge()
        else:
            after_router.settle_when_done(self, futures)

    def settle(self, error: BaseException | None) -> None:
        """On the consumer's loop: ack, or dead-letter a refused event, or hand it back."""
        try:
            if error is None:
                super().acknowledge()
            elif isinstance(error, PublishError):
                _dead_letter(self.task, self.name, self.id, self.args, self.kwargs, str(error))
                super().acknowledge()
            else:
                log.warning("task %s %s failed to publish: %s; requeued", self.name, self.id, error)
                self.reject(requeue=True)
        except Exception:
            # The channel died since delivery; RabbitMQ redelivers the message.
            log.warning("could not settle task %s; it will be redelivered", self.id, exc_info=True)


class PublishingTask(Task):  # type: ignore[misc]
    """Publishes through the process's one Publisher; acked after the router's ack.

    In the threads and solo pools the task returns at once and its message is
    acked when the router has acknowledged (AckAfterPublish). Elsewhere it
    waits; while the router is unreachable it is then retried with backoff.
    Either way the message is never acked before the router has the event. An
    invalid request goes to the dead-letter queue with its reason instead.
    """

    Request = AckAfterPublish

    def deliver(self, build: Any, *args: Any, **kwargs: Any) -> int:
        try:
            outgoing = build(*args, **kwargs)
        except events.InvalidEvent as exc:
            self.dead_letter(str(exc))
            return 0
        if isinstance(outgoing, events.Outgoing):
            outgoing = [outgoing]
        publisher = get_publisher()
        defer = bool(self.request.id) and not self.request.is_eager and after_router.can_defer()
        try:
            futures = [publisher.publish_async(o.topic, o.payload, **o.options) for o in outgoing]
            if defer:
                after_router.wait_for(self.request.id, futures)
                return len(outgoing)
            for future in futures:
                future.result(publisher.timeout)
        except TimeoutError:
            for future in futures:
                future.cancel()
            delay = min(0.5 * 2**self.request.retries, MAX_RETRY_DELAY)
            why = publisher.connection.last_error or "no acknowledgement"
            timeout = PublishTimeout(f"router did not acknowledge in time ({why})")
            log.warning("%s; retrying in %.1fs", timeout, delay)
            raise self.retry(exc=timeout, countdown=delay, max_retries=None) from None
        except PublishError as exc:
            # The router refused the event itself (not a transient fault):
            # keep it, with the reason, rather than fail and lose it.
            self.dead_letter(str(exc))
            return 0
        return len(outgoing)

    def dead_letter(self, reason: str) -> None:
        request = self.request
        _dead_letter(self, self.name, request.id, request.args, request.kwargs, reason)


def _dead_letter(
    task: Task, name: str, task_id: str, args: Any, kwargs: Any, reason: str
) -> None:
    log.warning("task %s %s is invalid: %s", name, task_id, reason)
    body = json.dumps(
        {"task": name, "id": task_id, "args": args, "kwargs": kwargs},
        default=str,
    )
    with task.app.producer_or_acquire() as producer:
        producer.publish(
            body,
            exchange="",
            routing_key=DEAD_QUEUE_NAME,
            declare=[dead_queue],
            headers={REASON_HEADER: reason, "x-tidings-task": name},
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            retry=True,
        )


@app.task(name="tidings.publish", bind=True, base=PublishingTask)
def publish(
    self: PublishingTask,
    topic: str,
    payload: dict[str, Any],
    exclude_authids: list[str] | None = None,
    eligible_authids: list[str] | None = None,
    retain: bool = False,
) -> int:
    """Publish `payload` on `topic`; the payload gets `event_id` (the task id) if it has none."""
    return self.deliver(
        events.publish,
        topic,
        payload,
        event_id=self.request.id,
        exclude_authids=exclude_authids,
        eligible_authids=eligible_authids,
        retain=retain,
    )


@app.task(name="tidings.entity_changed", bind=True, base=PublishingTask)
def entity_changed(
    self: PublishingTask,
    entity: str,
    id: int | str,
    action: str = "updated",
    changed_by: int | str | None = None,
    fields: list[str] | None = None,
    origin_session: int | None = None,
) -> int:
    """A record changed; tell everyone on it except the browser session that saved it."""
    if origin_session is not None and not isinstance(origin_session, int):
        self.dead_letter("origin_session must be a WAMP session id (integer)")
        return 0
    return self.deliver(
        events.entity_changed,
        entity,
        id,
        action=action,
        changed_by=changed_by,
        fields=fields,
        event_id=self.request.id,
        exclude_sessions=[origin_session] if origin_session else None,
    )


@app.task(name="tidings.maintenance", bind=True, base=PublishingTask)
def maintenance(
    self: PublishingTask, enabled: bool, message: str | None = None, by: int | str | None = None
) -> int:
    """Switch maintenance mode on or off for every connected user."""
    return self.deliver(
        events.maintenance, enabled, message=message, by=by, event_id=self.request.id
    )
