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

import inspect
import logging
from collections.abc import Callable
from typing import Any

from celery import signals
from celery.worker.strategy import default
from kombu.message import Message

from publisher import get_publisher
from workers import acks, events
from workers.acks import after_router

log = logging.getLogger(__name__)
_CHAINING = ("callbacks", "errbacks", "chain", "chord")
_WATCHED = (
    signals.task_received,
    signals.task_prerun,
    signals.task_postrun,
    signals.task_success,
    signals.task_failure,
)


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
    revoked = consumer.controller.state.revoked
    buckets = consumer.task_buckets
    rate_limits = not consumer.disable_rate_limits
    errors = consumer.connection_errors
    signature = inspect.signature(task.run)

    def needs_celery(headers: dict[str, Any], decoded: Any) -> bool:
        """What only Celery's own path does, checked per message: these can change
        while the worker runs (`celery control enable_events`, `rate_limit`, revoke)."""
        if not isinstance(decoded, list | tuple) or len(decoded) != 3:
            return True  # protocol 1, or malformed: Celery reports it its way
        args, task_kwargs, embed = decoded
        if not isinstance(args, list | tuple) or not isinstance(task_kwargs, dict):
            return True
        if embed is not None and not isinstance(embed, dict):
            return True
        if embed and any(embed.get(key) for key in _CHAINING):
            return True
        if headers.get("eta") or headers.get("expires") or headers.get("stamped_headers"):
            return True
        if headers.get("id") in revoked or (rate_limits and buckets[task.name] is not None):
            return True
        # The dispatcher is on for the worker's heartbeats too; task events are
        # sent only with -E or `enable_events` (then its groups name "task").
        events_on = eventer is not None and eventer.enabled and task.send_events
        if events_on and (not eventer.groups or "task" in eventer.groups):
            return True
        # Someone watches tasks (an APM, an exporter): give them the real thing.
        return any(signal.receivers for signal in _WATCHED)

    def handle(
        message: Message, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> None:
        headers = message.headers or {}
        task_id = str(headers.get("id") or "")
        decoded: Any = None if body is not None else message.payload
        if (
            not task_id
            or callbacks
            or needs_celery(headers, decoded)
            or not after_router.can_defer()
        ):
            celery_way(message, body, ack, reject, callbacks, **kw)
            return
        args, task_kwargs, _ = decoded  # needs_celery() checked its shape
        inline = _InlineTask(task, message, task_id, args, task_kwargs, errors)
        reason = _publish(task, task_id, args, task_kwargs, signature, inline)
        if reason is None:
            return
        try:
            inline.dead_letter(reason)
        except Exception:
            # The broker is in trouble: hand the message back rather than drop it.
            log.exception("could not dead-letter task %s %s", task.name, task_id)
            message.reject_log_error(log, errors, requeue=True)
            return
        message.ack_log_error(log, errors)

    return handle


def _publish(
    task: Any,
    task_id: str,
    args: Any,
    kwargs: Any,
    signature: inspect.Signature,
    inline: _InlineTask,
) -> str | None:
    """Send the task's publishes, settled later; or the reason to dead-letter it."""
    try:
        try:
            outgoing = task.plan(task_id, *args, **kwargs)
        except TypeError:
            # Arguments that do not fit the task (Celery would fail it and ack it
            # away) are told from a fault of the plan by binding them, only now:
            # binding costs more than the rest of a publish.
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                parameters = ", ".join(signature.parameters)
                return f"arguments do not fit {task.name}({parameters}): {exc}"
            raise
        publisher = get_publisher()
        futures = [publisher.publish_async(o.topic, o.payload, **o.options) for o in outgoing]
    except events.InvalidEvent as exc:
        return str(exc)
    except Exception as exc:
        # A fault of ours must cost this message, not the consumer (and every
        # worker RabbitMQ would hand the message to next).
        log.exception("task %s %s could not be published", task.name, task_id)
        return f"could not be published: {type(exc).__name__}: {exc}"
    after_router.settle_when_done(inline, futures)
    return None
