"""What one worker process shares: its settings, its LetterBox and its ledger.

Nothing is read at import: the settings come from the environment on first
use, once per process.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from publisher import get_publisher
from publisher.acked import Acked
from stores.history import RedisHistory
from tidings.events import Outgoing
from tidings.settings import Settings
from workers.ledger import Ledger
from workers.letterbox import LetterBox, confirming
from workers.metrics import health
from workers.relay import Relay


@lru_cache(maxsize=1)
def settings() -> Settings:
    """This worker process's settings, read from the environment on first use."""
    return Settings.from_environ(os.environ)


# Dead letters and hand-backs, and the ledger that settles every message the
# consumer publishes.
letters = LetterBox(lambda: confirming(settings().broker_url)())
ledger = Ledger(letters)


class LocalSink:
    """Memory mode: the publishes go to this node's router, through the process's Publisher."""

    def send(self, outgoing: list[Outgoing]) -> list[Acked]:
        publisher = get_publisher(settings())
        return [publisher.publish_async(o.topic, o.payload, **o.options) for o in outgoing]


@lru_cache(maxsize=1)
def sink() -> LocalSink | Relay:
    """Where a message's publishes go: this node's router, or in shared mode every node."""
    config = settings()
    if not config.redis_url:
        return LocalSink()
    history = RedisHistory(config.redis_url, config.history_size, config.history_ttl)
    return Relay(history, confirming(config.broker_url))


_turning: Any = None


def open_ledger(hub: Any) -> Ledger:
    """Called at every consumer (re)start with its event loop."""
    global _turning
    ledger.max_redeliveries = settings().max_redeliveries
    ledger.use_hub(hub)
    if hub is not None and hub is not _turning:
        # /livez: the loop that takes messages in and acks them still turns.
        hub.call_repeatedly(1.0, health.turn)
        _turning = hub
        health.turn()
    return ledger
