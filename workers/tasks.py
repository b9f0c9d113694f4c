"""The Celery tasks of the contract: publish, entity_changed and maintenance."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.worker.request import Request

from publisher import PublishError, PublishTimeout, get_publisher
from workers import acks, events
from workers.acks import after_router
from workers.celery_app import app

log = logging.getLogger(__name__)
MAX_RETRY_DELAY = 30.0


class AckAfterPublish(Request):  # type: ignore[misc]
    """A task request whose ack waits for the router's acknowledgements (workers.acks)."""

    def acknowledge(self) -> None:
        futures = after_router.take(self.id)
        if futures is None:
            super().acknowledge()
        else:
            after_router.settle_when_done(self, futures)

    def settle(self, error: BaseException | None) -> None:
        acks.settle(
            error,
            ack=super().acknowledge,
            requeue=lambda: self.reject(requeue=True),
            dead_letter=lambda reason: acks.dead_letter_task(
                self.task.app, self.name, self.id, self.args, self.kwargs, reason
            ),
            what=f"task {self.name} {self.id}",
        )


Plan = Callable[..., list[events.Outgoing]]


class PublishingTask(Task):  # type: ignore[misc]
    """Publishes through the process's one Publisher; acked after the router's ack.

    A task's `plan(task_id, *args, **kwargs)` turns its arguments into the
    publishes it stands for, or raises InvalidEvent. Most messages never reach
    the pool: the consumer publishes them itself (workers.inline) and acks each
    on the router's acknowledgement. Those it hands to the pool (a countdown, a
    chain) go the same way in the threads and solo pools (AckAfterPublish);
    in a prefork child the task waits, and while the router is unreachable it
    is retried with backoff. Either way the message is never acked before the
    router has the event, and an invalid one goes to the dead-letter queue
    with its reason instead.
    """

    Request = AckAfterPublish
    Strategy = "workers.inline:strategy"
    plan: Plan

    def deliver(self, *args: Any, **kwargs: Any) -> int:
        """Plan this request's publishes and send them (see above); returns how many."""
        try:
            outgoing = self.plan(self.request.id, *args, **kwargs)
        except events.InvalidEvent as exc:
            self.dead_letter(str(exc))
            return 0
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
        acks.dead_letter_task(self.app, self.name, request.id, request.args, request.kwargs, reason)


def plan_publish(
    task_id: str,
    topic: str,
    payload: dict[str, Any],
    exclude_authids: list[str] | None = None,
    eligible_authids: list[str] | None = None,
    retain: bool = False,
) -> list[events.Outgoing]:
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


def plan_entity_changed(
    task_id: str,
    entity: str,
    id: int | str,
    action: str = "updated",
    changed_by: int | str | None = None,
    fields: list[str] | None = None,
    origin_session: int | None = None,
) -> list[events.Outgoing]:
    if origin_session is not None and (
        isinstance(origin_session, bool) or not isinstance(origin_session, int)
    ):
        raise events.InvalidEvent("origin_session must be a WAMP session id (integer)")
    return events.entity_changed(
        entity,
        id,
        action=action,
        changed_by=changed_by,
        fields=fields,
        event_id=task_id,
        exclude_sessions=[origin_session] if origin_session else None,
    )


def plan_maintenance(
    task_id: str, enabled: bool, message: str | None = None, by: int | str | None = None
) -> list[events.Outgoing]:
    return [events.maintenance(enabled, message=message, by=by, event_id=task_id)]


# The contract's tasks: each publishes what its plan says.


@app.task(name="tidings.publish", bind=True, base=PublishingTask, plan=staticmethod(plan_publish))
def publish(
    self: PublishingTask,
    topic: str,
    payload: dict[str, Any],
    exclude_authids: list[str] | None = None,
    eligible_authids: list[str] | None = None,
    retain: bool = False,
) -> int:
    """Publish `payload` on `topic`; the payload gets `event_id` (the task id) if it has none."""
    return self.deliver(topic, payload, exclude_authids, eligible_authids, retain)


@app.task(
    name="tidings.entity_changed",
    bind=True,
    base=PublishingTask,
    plan=staticmethod(plan_entity_changed),
)
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
    return self.deliver(entity, id, action, changed_by, fields, origin_session)


@app.task(
    name="tidings.maintenance", bind=True, base=PublishingTask, plan=staticmethod(plan_maintenance)
)
def maintenance(
    self: PublishingTask, enabled: bool, message: str | None = None, by: int | str | None = None
) -> int:
    """Switch maintenance mode on or off for every connected user."""
    return self.deliver(enabled, message, by)
