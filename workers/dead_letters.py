"""The dead-letter queue `tidings.events.dead`: list what is in it, and replay it.

Raw events go back to the `tidings.events` exchange with their original
routing key (header `x-tidings-routing-key`); dead-lettered Celery tasks go
back to the `tidings` queue under their original task id, so the event id
stays the same and subscribers can drop a duplicate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Producer

from tidings.names import (
    EVENTS_EXCHANGE,
    REASON_HEADER,
    REPLAYS_HEADER,
    ROUTING_KEY_HEADER,
    TASK_HEADER,
    TASK_QUEUE,
)
from workers import amqp_tolerance
from workers.queues import dead_queue, events_exchange

EXCERPT = 120


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    routing_key: str | None  # of a raw event
    task: str | None  # of a Celery task
    size: int
    excerpt: str
    replays: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "routing_key": self.routing_key,
            "task": self.task,
            "size": self.size,
            "excerpt": self.excerpt,
            "replays": self.replays,
        }


@dataclass
class Replayed:
    events: int = 0
    tasks: int = 0
    skipped: int = 0  # not matching, or with nothing to say where it came from
    left: int = 0  # in the queue afterwards


def _describe(message: Any) -> DeadLetter:
    headers = message.headers or {}
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    text = body[:EXCERPT].decode("utf-8", "replace")
    return DeadLetter(
        reason=str(headers.get(REASON_HEADER, "(no reason recorded)")),
        routing_key=headers.get(ROUTING_KEY_HEADER),
        task=headers.get(TASK_HEADER),
        size=len(body),
        excerpt=text + ("…" if len(body) > EXCERPT else ""),
        replays=int(headers.get(REPLAYS_HEADER, 0)),
    )


def browse(broker_url: str, limit: int = 50) -> tuple[int, list[DeadLetter]]:
    """(how many there are, the first `limit` of them), leaving the queue as it was.

    Messages are fetched unacked and go back, in their place, when the
    channel closes; acking or requeueing one by one would not.
    """
    amqp_tolerance.install()  # what the worker could not decode, this must still list
    with Connection(broker_url) as conn:
        channel = conn.channel()
        queue = dead_queue(channel)
        _, count, _ = queue.queue_declare()
        found: list[DeadLetter] = []
        while len(found) < min(limit, count):
            message = queue.get(no_ack=False)
            if message is None:
                break
            found.append(_describe(message))
        channel.close()
    return count, found


def replay(broker_url: str, limit: int | None = None, match: str | None = None) -> Replayed:
    """Move dead letters back to where they came from; `match`: only reasons containing it.

    Looks at most at the messages present when it starts, so an event the
    worker dead-letters again is not replayed in a loop. Each is published
    with a publisher confirm before it is acked: a crash duplicates, never loses.
    """
    from workers.celery_app import app

    amqp_tolerance.install()
    result = Replayed()
    with Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        queue = dead_queue(channel)
        _, count, _ = queue.queue_declare()
        events_exchange(channel).declare()
        producer = Producer(channel)
        for _ in range(count if limit is None else min(limit, count)):
            message = queue.get(no_ack=False)
            if message is None:
                break
            letter = _describe(message)
            task = _task_of(message) if letter.task else None
            if (match and match not in letter.reason) or not (letter.routing_key or task):
                result.skipped += 1  # stays unacked: back in its place when the channel closes
                continue
            headers = {
                k: v
                for k, v in (message.headers or {}).items()
                if k not in (REASON_HEADER, ROUTING_KEY_HEADER, TASK_HEADER)
            }
            headers = amqp_tolerance.encodable(headers)
            headers[REPLAYS_HEADER] = letter.replays + 1
            if letter.routing_key is not None:
                producer.publish(
                    message.body,
                    exchange=EVENTS_EXCHANGE,
                    routing_key=letter.routing_key,
                    headers=headers,
                    content_type=message.content_type or "application/json",
                    content_encoding=message.content_encoding or "utf-8",
                    delivery_mode=2,
                    serializer=None,
                )
                result.events += 1
            elif task is not None:
                app.send_task(
                    task["task"],
                    task.get("args") or [],
                    task.get("kwargs") or {},
                    task_id=task.get("id"),
                    queue=TASK_QUEUE,
                    connection=conn,
                    headers={REPLAYS_HEADER: letter.replays + 1},
                )
                result.tasks += 1
            message.ack()
        channel.close()
    # Of those there when it started: what was passed over or not looked at.
    result.left = count - result.events - result.tasks
    return result


def purge(broker_url: str, match: str | None = None) -> int:
    """Drop the dead letters (those whose reason contains `match`); how many were dropped."""
    amqp_tolerance.install()
    dropped = 0
    with Connection(broker_url) as conn:
        channel = conn.channel()
        queue = dead_queue(channel)
        _, count, _ = queue.queue_declare()
        for _ in range(count):
            message = queue.get(no_ack=False)
            if message is None:
                break
            if match and match not in _describe(message).reason:
                continue  # stays unacked: back in its place when the channel closes
            message.ack()
            dropped += 1
        channel.close()
    return dropped


def _task_of(message: Any) -> dict[str, Any] | None:
    """The task a dead-lettered task message records: {"task", "id", "args", "kwargs"}."""
    try:
        task = json.loads(message.body)
    except ValueError:
        return None
    return task if isinstance(task, dict) and isinstance(task.get("task"), str) else None
