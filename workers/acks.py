"""Task messages acked on the router's acknowledgement, from the consumer's own loop."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any, Protocol

from celery import Celery
from celery.signals import worker_init
from kombu.asynchronous import get_event_loop

from publisher import PublishError
from publisher.acked import Acked
from workers.queues import DEAD_QUEUE_NAME, REASON_HEADER, TASK_HEADER, dead_queue

log = logging.getLogger(__name__)

# The worker's main process, where the consumer and its event loop (hub) live.
_consumer_pid: int | None = None


@worker_init.connect
def _remember_consumer_process(**_: Any) -> None:
    global _consumer_pid
    _consumer_pid = os.getpid()


class Settles(Protocol):
    def settle(self, error: BaseException | None) -> None: ...


class AfterRouter:
    """Task messages whose publishes are in flight, settled as the router acknowledges.

    Nothing waits on the router's round trip: the task (or the consumer) moves
    on at once, and the ack goes out on the consumer's loop, as AMQP channels
    are not thread-safe, once every publish of the message is acknowledged.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[Acked]] = {}
        self._hub: Any = None
        self._settled: list[tuple[Settles, BaseException | None]] = []
        self._lock = threading.Lock()

    def use_hub(self, hub: Any) -> None:
        """The consumer's event loop, where acks go out (told at every consumer start).

        Kept here because kombu forgets its current loop when Celery resets the
        hub after a broker reconnect, though the same hub goes on running.
        """
        if hub is not None:
            self._hub = hub

    def _current_hub(self) -> Any:
        return get_event_loop() or self._hub

    def can_defer(self) -> bool:
        # Only in the consumer's process (the consumer itself, or a threads or
        # solo pool): a prefork child cannot reach the parent's channel.
        return os.getpid() == _consumer_pid and self._current_hub() is not None

    def wait_for(self, task_id: str, futures: list[Acked]) -> None:
        with self._lock:
            self._waiting[task_id] = futures

    def take(self, task_id: str) -> list[Acked] | None:
        with self._lock:
            return self._waiting.pop(task_id, None)

    def settle_when_done(self, request: Settles, futures: list[Acked]) -> None:
        hub = self._current_hub()
        assert hub is not None  # can_defer() said so
        if not futures:
            with self._lock:
                self._settled.append((request, None))
            hub.call_soon(self._flush)
            return
        remaining = [len(futures)]

        def done(future: Acked) -> None:
            with self._lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
                self._settled.append((request, _first_error(futures)))
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


after_router = AfterRouter()


def _first_error(futures: list[Acked]) -> BaseException | None:
    for future in futures:
        if future.cancelled():
            return CancelledError("the publish was cancelled")  # handed back, not lost
        error = future.exception()
        if error is not None:
            return error
    return None


def settle(
    error: BaseException | None,
    *,
    ack: Callable[[], None],
    requeue: Callable[[], None],
    dead_letter: Callable[[str], None],
    what: str,
) -> None:
    """On the consumer's loop: ack, or dead-letter a refused event, or hand it back."""
    try:
        if error is None:
            ack()
        elif isinstance(error, PublishError):
            dead_letter(str(error))
            ack()
        else:
            log.warning("%s failed to publish: %s; requeued", what, error)
            requeue()
    except Exception:
        # The channel died since delivery (RabbitMQ redelivers the message), or
        # the dead-letter publish failed: then hand the message back.
        log.warning("could not settle %s; it will be redelivered", what, exc_info=True)
        try:
            requeue()
        except Exception:
            log.debug("could not requeue %s either", what, exc_info=True)


def dead_letter_task(
    app: Celery, name: str, task_id: str, args: Any, kwargs: Any, reason: str
) -> None:
    """Keep an invalid task, with its reason, in the dead-letter queue."""
    log.warning("task %s %s is invalid: %s", name, task_id, reason)
    body = json.dumps(
        {"task": name, "id": task_id, "args": args, "kwargs": kwargs},
        default=str,
    )
    with app.producer_or_acquire() as producer:
        producer.publish(
            body,
            exchange="",
            routing_key=DEAD_QUEUE_NAME,
            declare=[dead_queue],
            headers={REASON_HEADER: reason, TASK_HEADER: name},
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            # Bounded: this can run on the consumer's loop, which must not hang.
            retry=True,
            retry_policy={"max_retries": 3},
        )
