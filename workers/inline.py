"""A Celery task strategy: tidings' tasks are published by the consumer itself, not the pool.

A tidings task only hands its event to the router and waits for the
acknowledgement; run through the pool, Celery's per-task machinery (a request
object, a pool thread, a tracer, a result) cost as much again as the publish.
Here the consumer decodes the message, plans its publishes, sends them without
waiting, and the ledger acks the message on the router's acknowledgement
(workers.ledger), the same at-least-once as before. Messages that need what
only the pool gives — a countdown or ETA, an expiry, a revocation, a chain or
callbacks, task events for monitors — still go through Celery's default
strategy, keeping their place in the ledger's line.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from typing import Any

import kombu.utils.json
from celery import Task, signals
from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message

from tidings.errors import InvalidEvent, PublishRefused, detached
from tidings.events import quick_json
from tidings.names import TASK_QUEUE
from workers import amqp_tolerance
from workers.celery_consumer import dead_letter_task, dead_letter_undecodable, misshapen
from workers.ledger import Ledger
from workers.letterbox import TaskCall
from workers.runtime import open_ledger, sink

log = logging.getLogger(__name__)
# A tidings task stands for a payload of at most 60 KiB (MAX_EVENT_BYTES) and two
# lists of at most 1,000 user ids of 64 characters: about 1.6 MB at the most,
# with every character written as kombu writes it (a surrogate pair of \u
# escapes for an emoji). Larger, it is dead-lettered before it is read.
MAX_TASK_BYTES = 4 << 20
_CHAINING = ("callbacks", "errbacks", "chain", "chord")
REJECTED = "Celery rejected the task without requeueing it (the worker's log says why)"
_WATCHED = (
    signals.task_received,
    signals.task_prerun,
    signals.task_postrun,
    signals.task_success,
    signals.task_failure,
)


class Gate:
    """Which task messages only Celery's own path can run, checked per message: what decides
    can change while the worker runs (`celery control enable_events`, `rate_limit`, revoke)."""

    def __init__(self, task: Any, consumer: Any) -> None:
        self.task = task
        self.eventer = consumer.event_dispatcher
        self.revoked = consumer.controller.state.revoked
        self.buckets = consumer.task_buckets
        self.rate_limits = not consumer.disable_rate_limits

    def needs_celery(self, headers: dict[str, Any], decoded: Any) -> bool:
        if decoded is None or misshapen(decoded):
            return True  # protocol 1, or malformed: Celery reports it its way
        embed = decoded[2]
        if embed:
            for key in _CHAINING:  # a loop: any() makes a generator per call
                if embed.get(key):
                    return True
        if headers.get("eta") or headers.get("expires") or headers.get("stamped_headers"):
            return True
        if headers.get("id") in self.revoked:
            return True
        if self.rate_limits and self.buckets[self.task.name] is not None:
            return True
        # The dispatcher is on for the worker's heartbeats too; task events are
        # sent only with -E or `enable_events` (then its groups name "task").
        eventer = self.eventer
        events_on = eventer is not None and eventer.enabled and self.task.send_events
        if events_on and (not eventer.groups or "task" in eventer.groups):
            return True
        # Someone watches tasks (an APM, an exporter): give them the real thing.
        for signal in _WATCHED:  # noqa: SIM110 (a loop, as above)
            if signal.receivers:
                return True
        return False


def strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., None]:
    """Celery's strategy hook for a PublishingTask (see the module docstring)."""
    celery_way = default(task, app, consumer, **kwargs)
    ledger = open_ledger(consumer.hub)
    gate = Gate(task, consumer)
    signature = inspect.signature(task.run)

    declined: Message | None = None  # the last message in_line() left to Celery

    def in_line(message: Message) -> bool:
        """Publish a protocol-2 message here, or dead-letter it; False, having done
        nothing, if it needs Celery's own path."""
        nonlocal declined
        if len(message.body) > MAX_TASK_BYTES:
            reason = f"the task message's body is larger than {MAX_TASK_BYTES} bytes"
            dead_letter_task(ledger, message, reason)
            return True
        headers = message.headers or {}
        task_id = str(headers.get("id") or "")
        try:
            decoded = payload(message)
        except Exception as exc:  # kombu's DecodeError, ContentDisallowed
            dead_letter_undecodable(ledger, message, exc)
            return True
        shape = misshapen(decoded)
        if shape:
            # Celery's Request would fail on it later, in the pool, unsettled.
            dead_letter_task(ledger, message, shape)
            return True
        if not task_id or gate.needs_celery(headers, decoded):
            declined = message
            return False
        args, task_kwargs, _ = decoded
        call = TaskCall(task.name, task_id, args, task_kwargs)
        entry = ledger.open(message, TASK_QUEUE, call)
        unreadable = amqp_tolerance.unreadable(message)
        if unreadable:
            ledger.fail(entry, InvalidEvent(unreadable))
            return True
        try:
            futures = publish(task, call, signature)
        except (InvalidEvent, PublishRefused) as exc:
            ledger.fail(entry, exc)
            return True
        ledger.expect(entry, futures)
        return True

    def handle(
        message: Message, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> None:
        nonlocal declined
        if not ledger.ready():
            celery_way(message, body, ack, reject, callbacks, **kw)
            return
        # Body given: protocol 1, which Celery decoded; callbacks: someone watches.
        if declined is message:
            declined = None  # the consumer's fast lane asked already (celery_consumer)
        elif body is None and not callbacks and in_line(message):
            return
        # Celery's path settles it; the ledger keeps its place in line.
        task_id = str((message.headers or {}).get("id") or "")
        _through_celery(ledger, celery_way, task_id, message, body, ack, reject, callbacks, **kw)

    # The consumer's fast lane takes the task's messages straight to in_line()
    # (once the ledger is ready: it asks first).
    lanes = getattr(consumer, "in_line", None)
    if lanes is not None:
        lanes[task.name] = in_line
    return handle


# kombu decodes JSON with a decoder made per message (its object hook is passed
# per call), inside a context manager: a third of a task's decoding.
_JSON = "application/json"
_decode_json = json.JSONDecoder(object_hook=kombu.utils.json.object_hook).decode
# kombu's object hook turns {"__type__": ..., "__value__": ...} into a date, a
# UUID, bytes; a body without the word (nor an escape that could spell it) needs
# none, and msgspec reads it.
_TYPED, _ESCAPE = '"__type__"', "\\u"


def payload(message: Message) -> Any:
    """`message.payload`: JSON text (every task of tidings) decoded as kombu decodes it,
    quicker; anything else, and every error, left to kombu."""
    body = message.body
    accept = message.accept
    if (
        message.content_type == _JSON
        and isinstance(body, str)
        and (accept is None or _JSON in accept)
    ):
        # On an error kombu's way below raises its DecodeError, which Celery knows.
        try:
            if _TYPED in body or _ESCAPE in body:
                return _decode_json(body)
            return quick_json(body)
        except Exception:
            pass
    return message.payload


class InLineTask(Task):  # type: ignore[misc]
    """The base of the app's other tasks (`celery_app`): Celery runs them, and their
    messages take their places in the ledger's line (`in_line`)."""

    Strategy = "workers.inline:in_line"


def in_line(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., None]:
    """Celery's strategy hook for a task that is not a PublishingTask.

    Celery runs and settles it as usual. Its message takes its place in the
    ledger's line all the same: one the ledger never saw would be a gap in the
    delivery tags, after which it acks every later message on that channel one
    by one (a `multiple` ack could cover the unseen one), for good.
    """
    celery_way = default(task, app, consumer, **kwargs)
    ledger = open_ledger(consumer.hub)

    def handle(
        message: Message, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> None:
        if not ledger.ready():
            celery_way(message, body, ack, reject, callbacks, **kw)
            return
        # No task id: such a task never publishes through the ledger (`adopt`).
        _through_celery(ledger, celery_way, None, message, body, ack, reject, callbacks, **kw)

    return handle


def _through_celery(
    ledger: Ledger,
    celery_way: Callable[..., None],
    task_id: str | None,
    message: Message,
    body: Any,
    ack: Any,
    reject: Any,
    callbacks: Any,
    **kw: Any,
) -> None:
    """Hand the message to Celery's own path, its place in the ledger's line kept."""
    ledger.foreign(message, TASK_QUEUE, task_id)
    told_ack, told_reject = _telling(ledger, message)
    try:
        celery_way(message, body, told_ack, told_reject, callbacks, **kw)
    except (InvalidTaskError, ContentDisallowed, DecodeError) as exc:
        # Celery's consumer would reject (drop) or ack it: dead-lettered with
        # the reason instead, in its turn, its place in line freed.
        reason = f"Celery refused the task: {exc}"
        detached(exc)  # kombu re-raised it from a frame that holds it and the message
        ledger.refuse(message, InvalidEvent(reason))


def _telling(ledger: Ledger, message: Message) -> tuple[Callable[..., None], Callable[..., None]]:
    """Celery's ack and reject for `message`, done by the ledger, which then knows it went out.

    They stand in for Celery's own (which queue `message.ack_log_error` and
    `reject_log_error` on the consumer's loop, as these do): the ledger must
    not send a `multiple` ack over this message before its own ack went out.
    """

    def ack(*args: Any) -> None:
        ledger.settle_foreign(message, message.ack_log_error, *args)

    def reject(logger: Any, errors: Any, requeue: bool = False) -> None:
        # Not requeued, it would be dropped (the queue has no dead-letter
        # exchange): kept instead, as RabbitMQ would with one (an ETA no date
        # can hold, a task raising `Reject`).
        if not requeue and ledger.refuse(message, InvalidEvent(REJECTED)):
            return
        ledger.settle_foreign(message, message.reject_log_error, logger, errors, requeue)

    return ack, reject


def misfitting(name: str, signature: inspect.Signature, args: Any, kwargs: Any) -> str | None:
    """Why arguments do not fit the task (Celery would fail it and ack it away), or None.

    Called once a plan raised TypeError, to tell misfit arguments from a fault
    of the plan: binding costs more than the rest of a publish.
    """
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return f"arguments do not fit {name}({', '.join(signature.parameters)}): {exc}"
    return None


def publish(task: Any, call: TaskCall, signature: inspect.Signature) -> list[Any]:
    """Send the task's publishes; their futures. Raises InvalidEvent or PublishRefused."""
    try:
        try:
            outgoing = task.plan(call.id, *call.args, **call.kwargs)
        except TypeError:
            misfit = misfitting(task.name, signature, call.args, call.kwargs)
            if misfit:
                raise InvalidEvent(misfit) from None
            raise
        return sink().send(outgoing)
    except InvalidEvent:
        raise
    except Exception as exc:
        # A fault of ours must cost this message, not the consumer (and every
        # worker RabbitMQ would hand the message to next).
        log.exception("task %s %s could not be published", task.name, call.id)
        raise PublishRefused(f"could not be published: {type(exc).__name__}: {exc}") from None
