"""The Celery tasks of the contract: publish, entity_changed and maintenance."""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task

from publisher import PublishError, PublishTimeout, get_publisher
from workers import events
from workers.celery_app import app
from workers.queues import DEAD_QUEUE_NAME, REASON_HEADER, dead_queue

log = logging.getLogger(__name__)
MAX_RETRY_DELAY = 30.0


class PublishingTask(Task):  # type: ignore[misc]
    """Publishes through the process's one Publisher and waits for the router's ack.

    While the router is unreachable the task is retried with backoff, so the
    message is never acked before the router has the event. An invalid
    request goes to the dead-letter queue with its reason instead.
    """

    def deliver(self, build: Any, *args: Any, **kwargs: Any) -> int:
        try:
            outgoing = build(*args, **kwargs)
        except events.InvalidEvent as exc:
            self.dead_letter(str(exc))
            return 0
        if isinstance(outgoing, events.Outgoing):
            outgoing = [outgoing]
        publisher = get_publisher()
        try:
            futures = [publisher.publish_async(o.topic, o.payload, **o.options) for o in outgoing]
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
        log.warning("task %s %s is invalid: %s", self.name, self.request.id, reason)
        body = json.dumps(
            {
                "task": self.name,
                "id": self.request.id,
                "args": self.request.args,
                "kwargs": self.request.kwargs,
            },
            default=str,
        )
        with self.app.producer_or_acquire() as producer:
            producer.publish(
                body,
                exchange="",
                routing_key=DEAD_QUEUE_NAME,
                declare=[dead_queue],
                headers={REASON_HEADER: reason, "x-tidings-task": self.name},
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
