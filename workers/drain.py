"""A warm shutdown (SIGTERM) that finishes what is in flight: no message handed back twice.

The last step of the consumer to start, so the first to stop: when the
worker is told to stop, it cancels every consumer (tasks, raw events, this
node's deliveries), then waits until the ledger has settled every message
whose publishes were out, acking them, for at most TIDINGS_PUBLISH_TIMEOUT.
Only then does Celery close the channels; whatever was prefetched and not
yet published goes back to RabbitMQ untouched, for the next worker. Without
it, Celery closes the channels at once and RabbitMQ hands out again messages
the router already delivered: a rolling restart made duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from celery import bootsteps
from celery.worker import state

from workers.delivery import DeliveryConsumer
from workers.raw_consumer import RawEventConsumer
from workers.runtime import ledger, settings

log = logging.getLogger(__name__)
# How often the ledger is settled while waiting: the hub no longer turns.
SETTLE_EVERY = 0.01


class Drain(bootsteps.StartStopStep):  # type: ignore[misc]
    """Stops taking messages and settles those in flight (see the module docstring)."""

    requires = ("celery.worker.consumer.tasks:Tasks", RawEventConsumer, DeliveryConsumer)

    def start(self, c: Any) -> None:
        pass

    def stop(self, c: Any) -> None:
        # Also called when the consumer restarts after a lost connection: nothing
        # can be settled on a dead channel then, and RabbitMQ hands everything out again.
        if state.should_stop is None and not state.should_terminate:
            return
        for consumer in consumers_of(c):
            with contextlib.suppress(Exception):
                consumer.cancel()
        settled = settle_in_flight(settings().publish_timeout)
        if not settled:
            log.warning(
                "stopping with %d messages unsettled; RabbitMQ hands them out again", len(ledger)
            )

    def shutdown(self, c: Any) -> None:
        pass


def consumers_of(c: Any) -> list[Any]:
    found = [c.task_consumer] if getattr(c, "task_consumer", None) is not None else []
    for step in getattr(c, "steps", []):
        if isinstance(step, RawEventConsumer | DeliveryConsumer):
            found += list(step.consumers or ())
    return found


def settle_in_flight(timeout: float) -> bool:
    """Settle messages as the router answers until none is left; False if time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        ledger.flush()  # on the consumer's thread: its channel is safe to use here
        if len(ledger) == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(SETTLE_EVERY)
