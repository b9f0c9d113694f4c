"""The Celery application of tidings and its configuration.

Nothing is read at import: the settings come from the environment when Celery
first needs its configuration.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.signals import worker_init, worker_process_init

from tidings.names import TASK_QUEUE
from workers import (  # noqa: F401 (logs: JSON lines when asked for; heap: on worker_ready)
    amqp_tolerance,
    bounded_decompression,
    heap,
    logs,
)
from workers.delivery import DeliveryConsumer
from workers.drain import Drain
from workers.queues import task_queue
from workers.raw_consumer import RawEventConsumer
from workers.runtime import settings

BUFFERED = "workers.amqp_transport:Transport"


def celery_config() -> dict[str, Any]:
    broker_url = settings().broker_url
    return {
        "broker_url": broker_url,
        # Reads a burst of messages per turn, buffered (plain TCP; TLS keeps kombu's).
        "broker_transport": BUFFERED if urlsplit(broker_url).scheme in ("amqp", "pyamqp") else None,
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickle payload from the network would be code execution.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        # At-least-once: a message is acked only after the task (and so the
        # router's acknowledgement) is done, and requeued if the worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # After a reconnect Celery lowers the prefetch and restores it from the
        # callback of an ack, which in the threads pool runs on a pool thread: a
        # basic.qos on the consumer's connection from there interleaves with the
        # consumer's own reads (frame errors, lost deliveries). Keep it fixed.
        "worker_enable_prefetch_count_reduction": False,
        # What it cannot run is dead-lettered in the ledger's line, not dropped.
        "worker_consumer": "workers.celery_consumer:Consumer",
        "task_queues": (task_queue,),
        "task_default_queue": TASK_QUEUE,
        "task_default_exchange": TASK_QUEUE,
        "task_default_routing_key": TASK_QUEUE,
        "task_create_missing_queues": False,
        # Tasks take about a millisecond, and a task's message stays unacked until
        # the router acknowledged its publish: a deep prefetch (8 threads x 128)
        # keeps the pool fed meanwhile; 32 gave (a) a fifth less (make bench).
        "worker_prefetch_multiplier": 128,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


# A header py-amqp cannot decode costs its message, not the connection.
amqp_tolerance.install()
# A compressed body is decompressed up to a limit, or dead-lettered.
bounded_decompression.install()

# Every other task's message takes its place in the ledger's line too (workers.inline).
app = Celery("tidings", include=["workers.tasks"], task_cls="workers.inline:InLineTask")
# A promise: evaluated when Celery first reads its configuration, not now.
app.add_defaults(celery_config)

# The raw domain-event consumer runs in every `celery worker` of this app.
app.steps["consumer"].add(RawEventConsumer)
# Shared mode: this node's deliveries (idle in memory mode).
app.steps["consumer"].add(DeliveryConsumer)
# Last to start, first to stop: a warm shutdown settles what is in flight.
app.steps["consumer"].add(Drain)


@worker_init.connect
def _meters_for_a_prefork_pool(sender: Any = None, **_: Any) -> None:
    """In a prefork worker the children count into files the parent's /metrics sums."""
    from publisher import meters
    from workers import metrics

    if not settings().worker_metrics_port:
        meters.switch_off()  # before the pool forks: its children count nothing either
        return
    pool = getattr(sender, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "prefork" in str(name):
        metrics.share_with_children()


@worker_process_init.connect
def _connect_publisher(**_: Any) -> None:
    """A prefork pool process connects its own Publisher right after the fork."""
    from publisher import get_publisher

    get_publisher(settings())
