"""Missed-event recovery: the last events of each topic, and `tidings.history.since`.

A router-side component (`.crossbar/config.json`) subscribes to every
`tidings.` topic whose catalogue entry has `history=True` and keeps the last
TIDINGS_HISTORY_SIZE events of each. Crossbar's own event history is not used:
it loses events when a topic has several subscribers, and checks no
permissions on reading.
"""

from __future__ import annotations

import os
from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions, SubscribeOptions

from router.principals import SessionDirectory, browser_errors
from tidings import access, catalogue
from tidings.errors import HISTORY_GAP, INVALID_ARGUMENT, NOT_AUTHORIZED, HistoryGap
from tidings.history_book import EventHistory
from tidings.names import HISTORY_PROCEDURE
from tidings.settings import Settings


def keeps_history(uri: str) -> bool:
    found = catalogue.lookup(uri)
    return found is not None and found[0].history


class History(ApplicationSession):  # type: ignore[misc]
    """The router-side history component; registers `tidings.history.since`."""

    async def onJoin(self, details: Any) -> None:
        config = Settings.from_environ(os.environ)
        self.history = EventHistory(
            config.history_size, config.history_topics, config.history_bytes
        )
        self.directory = SessionDirectory(self)
        await self.directory.attach()
        # One prefix subscription sees every event; the catalogue says which to keep.
        await self.subscribe(
            self._on_event, "tidings.", options=SubscribeOptions(match="prefix", details=True)
        )
        await self.register(
            self.since, HISTORY_PROCEDURE, options=RegisterOptions(details_arg="details")
        )
        self.log.info(
            "history ready: {size} events per topic, at most {topics} topics and {bytes} bytes",
            size=config.history_size,
            topics=config.history_topics,
            bytes=config.history_bytes,
        )

    def _on_event(self, *args: Any, details: Any = None, **kwargs: Any) -> None:
        topic = getattr(details, "topic", None)
        payload = args[0] if args else kwargs
        if isinstance(topic, str) and isinstance(payload, dict) and keeps_history(topic):
            self.history.add(topic, payload)

    @browser_errors
    async def since(
        self, topic: Any = None, after_event_id: Any = None, details: Any = None
    ) -> list[dict[str, Any]]:
        """`tidings.history.since(topic, after_event_id)`: the events missed since that one."""
        if not isinstance(topic, str) or not keeps_history(topic):
            raise ApplicationError(INVALID_ARGUMENT, "topic has no history (tidings/catalogue.py)")
        if after_event_id is not None and not isinstance(after_event_id, str):
            raise ApplicationError(INVALID_ARGUMENT, "after_event_id must be an event id string")
        caller = await self.directory.caller(details)
        if not caller.is_backend and not access.may_subscribe(caller.authid, caller.perms, topic):
            raise ApplicationError(NOT_AUTHORIZED, f"no permission to read {topic}")
        try:
            return self.history.since(topic, after_event_id)
        except HistoryGap:
            raise ApplicationError(
                HISTORY_GAP,
                f"event {after_event_id} of {topic} is no longer held; reload the data",
            ) from None
