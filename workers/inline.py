"""A Celery task strategy: tidings' tasks are published by the consumer itself, not the pool.

A tidings task only hands its event to the router and waits for the
acknowledgement; run through the pool, Celery's per-task machinery (a request
object, a pool thread, a tracer, a result) cost as much again as the publish.
Here the consumer decodes the message, plans its publishes, sends them without
waiting, and acks the message on the router's acknowledgement (workers.acks),
the same at-least-once as before. Messages that need what only the pool
gives — a countdown or ETA, an expiry, a revocation, a chain or callbacks,
task events for monitors — still go through Celery's default strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.strategy import default
from kombu.message import Message

from publisher import get_publisher
from workers import acks, events
from workers.acks import after_router

log = logging.getLogger(__name__)
_CHAINING = ("callbacks", "errbacks", "chain", "chord")


class _InlineTask:
    """A task message published by the consumer, settled on the router's acknowledgement."""

    __slots__ = ("args", "errors", "kwargs", "message", "task", "task_id")

    def __init__(
        self, task: Any, message: Message, task_id: str, args: Any, kwargs: Any, errors: Any
    ) -> None:
        self.task = task
        self.message = message
        self.task_id = task_id
        self.args = args
        self.kwargs = kwargs
        self.errors = errors

    def settle(self, error: BaseException | None) -> None:
        acks.settle(
            error,
            ack=lambda: self.message.ack_log_error(log, self.errors),
            requeue=lambda: self.message.reject_log_error(log, self.errors, requeue=True),
            dead_letter=self.dead_letter,
            what=f"task {self.task.name} {self.task_id}",
        )

    def dead_letter(self, reason: str) -> None:
        acks.dead_letter_task(
            self.task.app, self.task.name, self.task_id, self.args, self.kwargs, reason
        )


def strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., None]:
    """Celery's strategy hook for a PublishingTask (see the module docstring)."""
    celery_way = default(task, app, consumer, **kwargs)
    after_router.use_hub(consumer.hub)
    eventer = consumer.event_dispatcher
    # The dispatcher is on for the worker's heartbeats too; task events are
    # sent only with -E (then its groups name "task", or none at all).
    sends_task_events = eventer is not None and eventer.enabled and task.send_events
    if sends_task_events and (not eventer.groups or "task" in eventer.groups):
        return celery_way  # monitors expect task-received/succeeded events
    revoked = consumer.controller.state.revoked
    errors = consumer.connection_errors

    def handle(
        message: Message, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> None:
        headers = message.headers or {}
        task_id = str(headers.get("id") or "")
        decoded = None if body is not None else message.payload
        if (
            not isinstance(decoded, list | tuple)
            or len(decoded) != 3
            or not task_id
            or callbacks
            or headers.get("eta")
            or headers.get("expires")
            or task_id in revoked
            or any((decoded[2] or {}).get(key) for key in _CHAINING)
            or not after_router.can_defer()
        ):
            celery_way(message, body, ack, reject, callbacks, **kw)
            return
        args, task_kwargs, _ = decoded
        inline = _InlineTask(task, message, task_id, args, task_kwargs, errors)
        try:
            outgoing = task.plan(task_id, *args, **task_kwargs)
        except events.InvalidEvent as exc:
            reason = str(exc)
        except TypeError as exc:
            # Arguments that do not fit the task: Celery would fail it and ack it away.
            reason = f"arguments do not fit {task.name}: {exc}"
        else:
            publisher = get_publisher()
            futures = [publisher.publish_async(o.topic, o.payload, **o.options) for o in outgoing]
            after_router.settle_when_done(inline, futures)
            return
        inline.dead_letter(reason)
        message.ack_log_error(log, errors)

    return handle
