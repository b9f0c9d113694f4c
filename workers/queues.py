"""The RabbitMQ exchanges and queues of tidings as kombu objects, declared in one place."""

from __future__ import annotations

from kombu import Exchange, Queue

from tidings.names import DEAD_QUEUE, EVENTS_EXCHANGE, EVENTS_QUEUE, TASK_EXCHANGE, TASK_QUEUE

# Celery tasks. Kept a plain durable queue: any Celery client that sends with
# queue="tidings" declares it the same way, and extra arguments would clash.
task_exchange = Exchange(TASK_EXCHANGE, type="direct", durable=True)
task_queue = Queue(TASK_QUEUE, task_exchange, routing_key=TASK_QUEUE, durable=True)

# Raw JSON domain events from producers that do not speak Celery: routing key = event type.
events_exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
events_queue = Queue(EVENTS_QUEUE, events_exchange, routing_key="#", durable=True)
# What cannot be published, with the reason in a header; published through the
# default exchange straight to this queue.
dead_queue = Queue(DEAD_QUEUE, durable=True)
