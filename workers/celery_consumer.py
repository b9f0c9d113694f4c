"""Celery's consumer, with the task messages it cannot run dead-lettered in the ledger's line.

Celery acks a task message whose body it cannot decode, and rejects (drops,
the queue having no dead-letter exchange) one of an unknown task or of no
task at all: the message is lost, and the ledger, which never saw its
delivery tag, takes it for a gap and acks every later message on that
channel one by one, for good. Here such a message takes its place in the
ledger's line and is dead-lettered with the reason in its turn; an unknown
task keeps its name, id and arguments, so that `tidings dead-letters replay`
can send it again once a worker knows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message
from vine import promise

from tidings.errors import InvalidEvent, detached
from tidings.names import TASK_QUEUE
from workers.ledger import Ledger
from workers.letterbox import TaskCall
from workers.runtime import ledger as worker_ledger

log = logging.getLogger(__name__)


def dead_letter_task(
    ledger: Ledger, message: Message, reason: str, call: TaskCall | None = None
) -> None:
    """Put a task message Celery cannot run in the ledger's line, to be dead-lettered
    with `reason` (with `call`, as a task that can be replayed)."""
    ledger.fail(ledger.open(message, TASK_QUEUE, call), InvalidEvent(reason))


def dead_letter_undecodable(ledger: Ledger, message: Message, exc: BaseException) -> None:
    """Dead-letter a task message whose body cannot be decoded, saying why."""
    reason = f"the task message cannot be decoded: {exc}"
    detached(exc)  # kombu re-raised it from a frame that holds it and the message
    dead_letter_task(ledger, message, reason)


def misshapen(decoded: Any) -> str | None:
    """Why a protocol-2 task body is not [args, kwargs, options], or None."""
    if not isinstance(decoded, list | tuple) or len(decoded) != 3:
        return "a task message's body must be [args, kwargs, options]"
    args, task_kwargs, embed = decoded
    if not isinstance(args, list | tuple) or not isinstance(task_kwargs, dict):
        return "a task message's body must be [args, kwargs, options]"
    if embed is not None and not isinstance(embed, dict):
        return "a task message's options must be an object"
    return None


def task_call(message: Message) -> TaskCall | None:
    """The task a protocol-2 message asks for, if its headers and body say it plainly."""
    headers = message.headers or {}
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not isinstance(task_id, str):
        return None
    try:
        decoded = message.decode()
    except Exception:
        return None
    if misshapen(decoded):
        return None
    args, kwargs, _ = decoded
    return TaskCall(name, task_id, list(args), kwargs)


def _misnamed(headers: dict[str, Any]) -> str | None:
    """Why a task message's `task` or `id` header cannot be taken as it is, or None."""
    for key in ("task", "id"):
        value = headers.get(key)
        if value is not None and type(value) is not str:
            return f"the {key!r} header must be text, not {type(value).__name__}"
    return None


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's worker consumer (`worker_consumer`), see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Task name -> a handler that takes its message without Celery's own
        # machinery, or declines it (workers.inline.strategy fills it).
        self.in_line: dict[str, Callable[[Message], bool]] = {}
        super().__init__(*args, **kwargs)

    def create_task_handler(self, promise: Any = promise) -> Callable[[Message], None]:
        """Celery's handler of task messages, after a fast lane: a tidings task's message
        goes straight to its strategy's in-line path, without the two promises, the
        lookups and the checks Celery makes for each message first."""
        through_celery = super().create_task_handler(promise)
        lanes = self.in_line
        watchers = self.on_task_message

        def on_task_received(message: Message) -> None:
            headers = message.headers
            if type(headers) is dict and worker_ledger.ready():
                misnamed = _misnamed(headers)
                if misnamed:
                    dead_letter_task(worker_ledger, message, misnamed)
                    return
                lane = None if watchers else lanes.get(headers.get("task"))  # type: ignore[arg-type]
                if lane is not None and lane(message):
                    return
            try:
                through_celery(message)
            except Exception as exc:
                if not worker_ledger.ready():
                    raise
                # Raised before Celery settled it: it would wait unacked for good.
                log.warning("Celery could not take a task message: %r", exc)
                reason = f"Celery could not take the task message: {exc!r}"
                detached(exc)  # its frames hold the message: no cycle to wait for
                if not worker_ledger.refuse(message, InvalidEvent(reason)):
                    dead_letter_task(worker_ledger, message, reason)

        return on_task_received

    def _from_task_queue(self, message: Message) -> bool:
        # The task queue's messages only: the broadcast (pidbox) consumer reports
        # its decode errors here too, on a channel of its own.
        task_consumer = getattr(self, "task_consumer", None)
        channel = getattr(task_consumer, "channel", None)
        return worker_ledger.ready() and channel is not None and message.channel is channel

    def on_decode_error(self, message: Message, exc: BaseException) -> None:
        if not self._from_task_queue(message):
            super().on_decode_error(message, exc)
            return
        log.warning("a task message cannot be decoded: %s", exc)
        dead_letter_undecodable(worker_ledger, message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        if not self._from_task_queue(message):
            super().on_unknown_message(body, message)
            return
        reason = "not a Celery task message: no task named in its headers"
        dead_letter_task(worker_ledger, message, reason)

    def on_unknown_task(self, body: Any, message: Message, exc: BaseException) -> None:
        if not self._from_task_queue(message):
            super().on_unknown_task(body, message, exc)
            return
        name = (message.headers or {}).get("task")
        reason = f"unknown task {name!r}: no task of that name is registered in this worker"
        dead_letter_task(worker_ledger, message, reason, task_call(message))
