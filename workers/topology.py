"""What tidings needs on the broker, declared in one go: exchanges, queues, the dead-letter queue.

Idempotent: declaring what exists with the same arguments changes nothing,
so `tidings setup` runs before every start. Until the queues exist, RabbitMQ
drops events published to `tidings.events` as unroutable.
"""

from __future__ import annotations

from kombu import Connection

from tidings.settings import Settings
from workers.delivery import delivery_queue
from workers.queues import dead_queue, events_queue, task_queue
from workers.relay import nodes_exchange


def declare(settings: Settings, timeout: float = 5.0) -> list[str]:
    """Declare every exchange and queue (in shared mode, this node's delivery queue too);
    returns the queues' names. Raises OSError-like errors when the broker cannot be reached."""
    queues = [task_queue, events_queue, dead_queue]
    if settings.redis_url:
        queues.append(delivery_queue(settings))
    with Connection(settings.broker_url, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        channel = connection.default_channel
        for queue in queues:
            queue(channel).declare()  # its exchange and binding too
        if settings.redis_url:
            nodes_exchange(channel).declare()
    return [str(queue.name) for queue in queues]
