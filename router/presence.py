"""Presence: who is on which record, from the router's subscription meta events.

A router-side component (`.crossbar/config.json`). A browser that subscribes
to `tidings.entity.<e>.<id>` is on that record; the others hear
`{"user", "state": "joined"|"left"}` on `tidings.presence.<e>.<id>`, once per
user however many tabs they have open. Runs under Twisted in the router: it
never imports the asyncio Publisher.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions
from twisted.internet.defer import DeferredLock, ensureDeferred

from router.principals import SessionDirectory, browser_errors, require_name
from tidings import access, catalogue
from tidings.errors import NOT_AUTHORIZED
from tidings.names import EDITORS_PROCEDURE
from tidings.presence_book import PresenceBook

RECORD_PATTERN = "tidings.entity.{entity}.{id}"


def record_of(uri: str) -> tuple[str, str] | None:
    """(entity, id) if `uri` is one record's topic, `tidings.entity.<entity>.<id>`."""
    found = catalogue.lookup(uri)
    if found is None or found[0].pattern != RECORD_PATTERN:
        return None
    return found[1]["entity"], found[1]["id"]


class Presence(ApplicationSession):  # type: ignore[misc]
    """The router-side presence component; registers `tidings.entity.editors`."""

    async def onJoin(self, details: Any) -> None:
        self.book = PresenceBook()
        self.directory = SessionDirectory(self)
        # subscription id → (uri, match), from on_create; avoids a round trip per subscribe.
        self._subscriptions: dict[int, tuple[str, str]] = {}
        # Meta events are handled one at a time, in the order the router sent
        # them, even when one handler waits on a look-up.
        self._in_order = DeferredLock()
        await self.directory.attach()
        for uri, handler in (
            ("wamp.subscription.on_create", self._on_create),
            ("wamp.subscription.on_subscribe", self._on_subscribe),
            ("wamp.subscription.on_unsubscribe", self._on_unsubscribe),
            ("wamp.subscription.on_delete", self._on_delete),
            ("wamp.session.on_leave", self._on_leave),
        ):
            await self.subscribe(self._serialized(handler), uri)
        await self.register(
            self.editors, EDITORS_PROCEDURE, options=RegisterOptions(details_arg="details")
        )
        self.log.info("presence ready")

    def _serialized(self, handler: Any) -> Any:
        def run(*args: Any) -> Any:
            return self._in_order.run(lambda: ensureDeferred(handler(*args)))

        return run

    # -- meta events -------------------------------------------------------------
    async def _on_create(self, session_id: int, subscription: dict[str, Any]) -> None:
        self._subscriptions[subscription["id"]] = (subscription["uri"], subscription["match"])

    async def _on_delete(self, session_id: int, subscription_id: int) -> None:
        self._subscriptions.pop(subscription_id, None)

    async def _on_subscribe(self, session_id: int, subscription_id: int) -> None:
        found = await self._subscription(subscription_id)
        if found is None or found[1] != "exact":
            return
        record = record_of(found[0])
        if record is None:
            return
        principal = await self.directory.get(session_id)
        if principal is None or principal.is_backend:
            return  # gone already, or a server-side session: not a person
        if self.book.join(session_id, subscription_id, found[0], principal.authid):
            self._announce(record, principal.authid, "joined")

    async def _on_unsubscribe(self, session_id: int, subscription_id: int) -> None:
        gone = self.book.leave(session_id, subscription_id)
        if gone is not None:
            self._announce_topic(*gone)

    async def _on_leave(self, session_id: int) -> None:
        # The router also sends on_unsubscribe for each subscription of a
        # session that left; whichever comes first does the work, once.
        for gone in self.book.drop_session(session_id):
            self._announce_topic(*gone)

    async def _subscription(self, subscription_id: int) -> tuple[str, str] | None:
        known = self._subscriptions.get(subscription_id)
        if known is None:
            try:
                found = await self.call("wamp.subscription.get", subscription_id)
            except ApplicationError:
                return None  # deleted already
            known = (found["uri"], found["match"])
            self._subscriptions[subscription_id] = known
        return known

    # -- announcing --------------------------------------------------------------
    def _announce_topic(self, topic: str, user: str) -> None:
        record = record_of(topic)
        if record is not None:
            self._announce(record, user, "left")

    def _announce(self, record: tuple[str, str], user: str, state: str) -> None:
        # The user's own tabs know already; "the others" are told.
        done = self.publish(
            catalogue.presence_topic(*record),
            {"user": user, "state": state},
            options=PublishOptions(acknowledge=True, exclude_authid=[user]),
        )
        done.addErrback(lambda f: self.log.warn("presence publish failed: {why}", why=f.value))

    # -- procedure ---------------------------------------------------------------
    @browser_errors
    async def editors(self, entity: Any = None, id: Any = None, details: Any = None) -> list[str]:
        """`tidings.entity.editors(entity, id)`: the user ids now on that record."""
        entity = require_name(entity, "entity")
        record_id = require_name(id, "id")
        topic = catalogue.entity_topic(entity, record_id)
        caller = await self.directory.caller(details)
        if not caller.is_backend and not access.may_subscribe(caller.authid, caller.perms, topic):
            raise ApplicationError(NOT_AUTHORIZED, f"no permission to view {entity} records")
        return self.book.editors(topic)
