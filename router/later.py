"""Waiting on the router's reactor without blocking it."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater


def sleep(seconds: float) -> Any:
    """A Deferred that fires after `seconds`; await it in a component."""
    from twisted.internet import reactor

    return deferLater(reactor, seconds, lambda: None)
