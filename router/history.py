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
from twisted.internet.threads import deferToThread

from router import meters
from router.principals import SessionDirectory, browser_errors
from stores.history import RedisHistory
from tidings import access, catalogue
from tidings.errors import (
    HISTORY_GAP,
    INVALID_ARGUMENT,
    NOT_AUTHORIZED,
    UNAVAILABLE,
    HistoryGap,
    Unavailable,
)
from tidings.history_book import MAX_ANSWER_BYTES, EventHistory
from tidings.names import HISTORY_PROCEDURE
from tidings.settings import Settings


class History(ApplicationSession):  # type: ignore[misc]
    """The router-side history component; registers `tidings.history.since`.

    Memory mode: it hears every event (one prefix subscription) and keeps the
    last ones of each topic. Shared mode (TIDINGS_REDIS_URL): the workers
    record every event in Redis before it is delivered, and this answers from
    there, on any node, across restarts.
    """

    async def onJoin(self, details: Any) -> None:
        config = Settings.from_environ(os.environ)
        self.shared: RedisHistory | None = None
        self.history = EventHistory(
            config.history_size, config.history_topics, config.history_bytes
        )
        self.directory = SessionDirectory(self)
        await self.directory.attach()
        if config.redis_url:
            self.shared = RedisHistory(config.redis_url, config.history_size, config.history_ttl)
        else:
            # A prefix subscription per namespace sees every event; the catalogue says
            # which to keep.
            for namespace in catalogue.current().namespaces():
                await self.subscribe(
                    self._on_event,
                    namespace,
                    options=SubscribeOptions(match="prefix", details=True),
                )
        await self.register(
            self.since, HISTORY_PROCEDURE, options=RegisterOptions(details_arg="details")
        )
        if self.shared is None:
            history = self.history
            meters.provide(
                "history",
                lambda: {
                    "history_events": history.held(),
                    "history_bytes": history.bytes,
                    "history_topics": len(history),
                },
            )
        meters.ready("history")
        self.log.info(
            "history ready: {size} events per topic, kept in {where}",
            size=config.history_size,
            where=self.shared or f"memory (at most {config.history_bytes} bytes)",
        )

    def onLeave(self, details: Any) -> None:
        meters.ready("history", "left the realm")
        super().onLeave(details)

    def _on_event(self, *args: Any, details: Any = None, **kwargs: Any) -> None:
        topic = getattr(details, "topic", None)
        payload = args[0] if args else kwargs
        if isinstance(topic, str) and isinstance(payload, dict) and catalogue.keeps_history(topic):
            self.history.add(topic, payload, catalogue.history_size(topic))

    @browser_errors
    async def since(
        self, topic: Any = None, after_event_id: Any = None, details: Any = None
    ) -> list[dict[str, Any]]:
        """`tidings.history.since(topic, after)`: the events missed since the event `after`
        (its event id, or in shared mode its position)."""
        try:
            answer = await self._since(topic, after_event_id, details)
        except ApplicationError as exc:
            meters.count("history", _RESULTS.get(exc.error, "invalid"))
            raise
        except Unavailable:
            meters.count("history", "unavailable")
            raise
        meters.count("history", "ok")
        return answer

    async def _since(self, topic: Any, after_event_id: Any, details: Any) -> list[dict[str, Any]]:
        if not isinstance(topic, str) or not catalogue.keeps_history(topic):
            raise ApplicationError(INVALID_ARGUMENT, "this topic keeps no history (the catalogue)")
        if after_event_id is not None and (
            not isinstance(after_event_id, str) or len(after_event_id) > 200
        ):
            raise ApplicationError(INVALID_ARGUMENT, "after_event_id must be an event id string")
        caller = await self.directory.caller(details)
        if not caller.is_backend and not access.may_subscribe(caller.authid, caller.perms, topic):
            raise ApplicationError(NOT_AUTHORIZED, f"no permission to read {topic}")
        try:
            if self.shared is None:
                return self.history.since(topic, after_event_id)
            try:
                answer: list[dict[str, Any]] = await deferToThread(
                    self.shared.since, topic, after_event_id, MAX_ANSWER_BYTES
                )
            except HistoryGap:
                raise
            except Exception as exc:
                self.log.warn("history store unreachable: {why}", why=exc)
                raise Unavailable("the history cannot be read right now; try again") from None
            return answer
        except HistoryGap:
            raise ApplicationError(
                HISTORY_GAP,
                f"event {after_event_id} of {topic} is no longer held; reload the data",
            ) from None


# The error a browser gets -> the result counted (router.meters.HISTORY_RESULTS).
_RESULTS = {HISTORY_GAP: "gap", NOT_AUTHORIZED: "denied", UNAVAILABLE: "unavailable"}
