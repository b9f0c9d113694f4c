"""The Celery tasks of the contract: publish, entity_changed and maintenance."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.worker.request import Request

from publisher import get_publisher
from tidings import events
from tidings.errors import InvalidEvent, PublishRefused, PublishTimeout
from tidings.names import (
    DEAD_INVALID,
    DEAD_REDELIVERIES,
    DEAD_REFUSED,
    ENTITY_CHANGED_TASK,
    MAINTENANCE_TASK,
    PUBLISH_TASK,
)
from workers.celery_app import app
from workers.inline import misfitting
from workers.letterbox import TaskCall
from workers.runtime import ledger, letters, settings, sink

log = logging.getLogger(__name__)
MAX_RETRY_DELAY = 30.0


class AckAfterPublish(Request):  # type: ignore[misc]
    """A task request the ledger may take over once its publishes are sent (workers.ledger)."""

    def acknowledge(self) -> None:
        if ledger.adopted(self.id):
            self.acknowledged = True  # the ledger acks it after the router's acknowledgement
        else:
            super().acknowledge()


Plan = Callable[..., list[events.Outgoing]]


class PublishingTask(Task):  # type: ignore[misc]
    """Publishes through the process's one Publisher; acked after the router's ack.

    A task's `plan(task_id, *args, **kwargs)` turns its arguments into the
    publishes it stands for, or raises InvalidEvent. Most messages never reach
    the pool: the consumer publishes them itself (workers.inline) and the
    ledger acks each on the router's acknowledgement. Those it hands to the
    pool (a countdown, a chain) go the same way in the threads and solo pools
    (the ledger adopts them); in a prefork child the task waits, and while the
    router is unreachable it is retried with backoff, at most
    TIDINGS_MAX_REDELIVERIES times. Either way the message is never acked
    before the router has the event, and an invalid one goes to the
    dead-letter queue with its reason instead.
    """

    Request = AckAfterPublish
    Strategy = "workers.inline:strategy"
    plan: Plan

    def deliver(self, *args: Any, **kwargs: Any) -> int:
        """Plan this request's publishes and send them (see above); returns how many."""
        request = self.request
        try:
            outgoing = self.plan(request.id, *args, **kwargs)
        except InvalidEvent as exc:
            self.dead_letter(str(exc), DEAD_INVALID)
            return 0
        except TypeError:
            # Misfit arguments (a protocol-1 message, a countdown): Celery would
            # fail the task and ack it away.
            misfit = misfitting(self.name, inspect.signature(self.run), args, kwargs)
            if misfit is None:
                raise
            self.dead_letter(misfit, DEAD_INVALID)
            return 0
        publisher = get_publisher(settings())
        futures = sink().send(outgoing)
        ready = request.id and not request.is_eager and ledger.ready()
        if ready and ledger.adopt(self._call(), futures):
            return len(outgoing)
        try:
            for future in futures:
                future.result(publisher.timeout)
        except TimeoutError:
            for future in futures:
                future.cancel()
            why = publisher.connection.last_error or "no acknowledgement"
            timeout = PublishTimeout(f"router did not acknowledge in time ({why})")
            limit = settings().max_redeliveries
            if request.retries >= limit:
                reason = f"redelivered {request.retries} times; last: {timeout}"
                self.dead_letter(reason, DEAD_REDELIVERIES)
                return 0
            delay = min(0.5 * 2**request.retries, MAX_RETRY_DELAY)
            log.warning("%s; retrying in %.1fs", timeout, delay)
            raise self.retry(exc=timeout, countdown=delay, max_retries=None) from None
        except PublishRefused as exc:
            # The router refused the event itself (not a transient fault):
            # keep it, with the reason, rather than fail and lose it.
            self.dead_letter(str(exc), DEAD_REFUSED)
            return 0
        return len(outgoing)

    def _call(self) -> TaskCall:
        request = self.request
        return TaskCall(self.name, request.id, request.args, request.kwargs)

    def dead_letter(self, reason: str, code: str) -> None:
        letters.dead_letter(None, reason, self._call(), code)


def publishing_task(name: str) -> Callable[[Plan], PublishingTask]:
    """Make a plan `plan(task_id, *args, **kwargs)` the Celery task `name`.

    The task takes the plan's arguments (without the task id, which becomes
    the event id): Celery checks them against that signature, and the task
    publishes what the plan returns.
    """

    def register(plan: Plan) -> PublishingTask:
        def run(self: PublishingTask, *args: Any, **kwargs: Any) -> int:
            return self.deliver(*args, **kwargs)

        planned = inspect.signature(plan)
        task_params = list(planned.parameters.values())[1:]  # not the task id
        self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        run.__signature__ = planned.replace(  # type: ignore[attr-defined]
            parameters=[self_param, *task_params], return_annotation=int
        )
        run.__name__ = run.__qualname__ = plan.__name__
        run.__doc__ = plan.__doc__
        task = app.task(name=name, bind=True, base=PublishingTask, plan=staticmethod(plan))(run)
        return task  # type: ignore[no-any-return]

    return register


# The contract's tasks: each publishes what its plan returns.


@publishing_task(PUBLISH_TASK)
def publish(
    task_id: str,
    topic: str,
    payload: dict[str, Any],
    exclude_authids: list[str] | None = None,
    eligible_authids: list[str] | None = None,
    retain: bool = False,
) -> list[events.Outgoing]:
    """Publish `payload` on `topic`; the payload gets `event_id` (the task id) if it has none."""
    return [
        events.publish(
            topic,
            payload,
            event_id=task_id,
            exclude_authids=exclude_authids,
            eligible_authids=eligible_authids,
            retain=retain,
        )
    ]


@publishing_task(ENTITY_CHANGED_TASK)
def entity_changed(
    task_id: str,
    entity: str,
    id: int | str,
    action: str = "updated",
    changed_by: int | str | None = None,
    fields: list[str] | None = None,
    origin_session: int | None = None,
) -> list[events.Outgoing]:
    """A record changed; tell everyone on it except the browser session that saved it."""
    return events.entity_changed(
        entity,
        id,
        action=action,
        changed_by=changed_by,
        fields=fields,
        event_id=task_id,
        exclude_sessions=events.origin_sessions(origin_session),
    )


@publishing_task(MAINTENANCE_TASK)
def maintenance(
    task_id: str, enabled: bool, message: str | None = None, by: int | str | None = None
) -> list[events.Outgoing]:
    """Switch maintenance mode on or off for every connected user."""
    return [events.maintenance(enabled, message=message, by=by, event_id=task_id)]
