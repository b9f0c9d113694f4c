"""The RabbitMQ exchanges and queues of tidings, declared in one place."""

from __future__ import annotations

from kombu import Exchange, Queue

# Celery tasks. Kept a plain durable queue: any Celery client that sends with
# queue="tidings" declares it the same way, and extra arguments would clash.
TASK_QUEUE_NAME = "tidings"
task_exchange = Exchange("tidings", type="direct", durable=True)
task_queue = Queue(TASK_QUEUE_NAME, task_exchange, routing_key="tidings", durable=True)

# Raw JSON domain events from producers that do not speak Celery: routing key = event type.
EVENTS_EXCHANGE_NAME = "tidings.events"
EVENTS_QUEUE_NAME = "tidings.events"
DEAD_QUEUE_NAME = "tidings.events.dead"
events_exchange = Exchange(EVENTS_EXCHANGE_NAME, type="topic", durable=True)
events_queue = Queue(EVENTS_QUEUE_NAME, events_exchange, routing_key="#", durable=True)
# Invalid events, with the reason in the header below; published through the
# default exchange straight to this queue.
dead_queue = Queue(DEAD_QUEUE_NAME, durable=True)
REASON_HEADER = "x-tidings-reason"
# Where a dead letter came from, so that `tidings dead-letters replay` can send it back:
# the routing key of a raw event, or the name of a Celery task.
ROUTING_KEY_HEADER = "x-tidings-routing-key"
TASK_HEADER = "x-tidings-task"
