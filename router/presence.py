"""Presence: who is on which record or in which room, from the router's subscription meta events.

A router-side component (`.crossbar/config.json`). A topic family that
declares `presence` in the catalogue is watched: a browser that subscribes
to `tidings.entity.<e>.<id>` is on that record, to `tidings.chat.<room>` in
that room; the others hear `{"user", "state": "joined"|"left"}` on the
declared presence topic (`tidings.presence.<e>.<id>`,
`tidings.presence.chat.<room>`), once per user however many tabs they have
open. Runs under Twisted in the router: it never imports the asyncio
Publisher.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions
from twisted.internet import reactor
from twisted.internet.defer import DeferredLock, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread

from router import meters
from router.later import sleep
from router.principals import SessionDirectory, browser_errors, require_name
from stores.presence import RedisPresence
from tidings import access, catalogue
from tidings.errors import INVALID_ARGUMENT, NOT_AUTHORIZED, Unavailable
from tidings.names import EDITORS_PROCEDURE
from tidings.names import PRESENCE_HERE_PROCEDURE as HERE_PROCEDURE
from tidings.presence_book import PresenceBook
from tidings.settings import Settings

_COUNTS = ("presence_users", "presence_records")


class Presence(ApplicationSession):  # type: ignore[misc]
    """The router-side presence component; registers `tidings.entity.editors`.

    Memory mode: one node's book (tidings.presence_book). Shared mode
    (TIDINGS_REDIS_URL): the book is in Redis, over every node
    (stores.presence); this node heartbeats, takes away the users of a node
    that stopped, and publishes the transitions any node announces.
    """

    async def onJoin(self, details: Any) -> None:
        config = Settings.from_environ(os.environ)
        self.shared = RedisPresence(config.redis_url, config.node) if config.redis_url else None
        self.book: PresenceBook | RedisPresence = self.shared or PresenceBook()
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
        for procedure, name in ((self.editors, EDITORS_PROCEDURE), (self.here, HERE_PROCEDURE)):
            await self.register(procedure, name, options=RegisterOptions(details_arg="details"))
        if self.shared is not None:
            self._start_shared(self.shared)
        else:
            book = self.book
            assert isinstance(book, PresenceBook)
            meters.provide("presence", lambda: dict(zip(_COUNTS, book.counts(), strict=True)))
        meters.ready("presence")
        self.log.info("presence ready, kept in {where}", where=self.shared or "memory")

    # -- shared mode -------------------------------------------------------------
    def _start_shared(self, shared: RedisPresence) -> None:
        self._stop = threading.Event()
        threading.Thread(
            target=shared.listen, args=(self._heard, self._stop), name="presence", daemon=True
        ).start()
        ensureDeferred(self._started(shared))

    async def _started(self, shared: RedisPresence) -> None:
        # What this node held before a restart is gone: its users left.
        while self.is_attached():
            try:
                gone = await deferToThread(shared.start)
                break
            except Exception as exc:
                self.log.warn("presence store unreachable: {why}; trying again", why=exc)
                await sleep(1.0)
        else:
            return
        for topic, user in gone:
            await self._transition(topic, user, "left")
        self._beat = LoopingCall(lambda: ensureDeferred(self._heartbeat(shared)))
        self._beat.start(shared.heartbeat_every, now=False)

    async def _heartbeat(self, shared: RedisPresence) -> None:
        try:
            await deferToThread(shared.beat)
            gone = await deferToThread(shared.reap)
        except Exception as exc:
            self.log.warn("presence heartbeat failed: {why}", why=exc)
            return
        for topic, user in gone:
            await self._transition(topic, user, "left")

    def _heard(self, topic: str, user: str, state: str) -> None:
        """On the listening thread: any node's announcement, published on this one."""
        announced = catalogue.presence_of(topic)
        if announced is not None:
            reactor.callFromThread(self._announce, announced, user, state)

    async def _announce_shared(self, topic: str, user: str, state: str) -> None:
        assert self.shared is not None
        try:
            await deferToThread(self.shared.announce, topic, user, state)
        except Exception as exc:
            self.log.warn("presence announcement lost: {why}", why=exc)

    def onLeave(self, details: Any) -> None:
        meters.ready("presence", "left the realm")
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        beat = getattr(self, "_beat", None)
        if beat is not None and beat.running:
            beat.stop()
        super().onLeave(details)

    async def _book(self, method: Any, *args: Any) -> Any:
        """Call the book: in a thread when it waits on the network (Redis)."""
        if self.shared is None:
            return method(*args)
        return await deferToThread(method, *args)

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
        if catalogue.presence_of(found[0]) is None:
            return
        principal = await self.directory.get(session_id)
        if principal is None or principal.is_backend:
            return  # gone already, or a server-side session: not a person
        joined = await self._book(
            self.book.join, session_id, subscription_id, found[0], principal.authid
        )
        if joined:
            await self._transition(found[0], principal.authid, "joined")

    async def _on_unsubscribe(self, session_id: int, subscription_id: int) -> None:
        gone = await self._book(self.book.leave, session_id, subscription_id)
        if gone is not None:
            topic, user = gone
            await self._transition(topic, user, "left")

    async def _on_leave(self, session_id: int) -> None:
        # The router also sends on_unsubscribe for each subscription of a
        # session that left; whichever comes first does the work, once.
        for topic, user in await self._book(self.book.drop_session, session_id):
            await self._transition(topic, user, "left")

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
    async def _transition(self, topic: str, user: str, state: str) -> None:
        """A user came onto or left a record: tell the others, on every node."""
        if self.shared is not None:
            await self._announce_shared(topic, user, state)  # heard by every node, this one too
            return
        announced = catalogue.presence_of(topic)
        if announced is not None:
            self._announce(announced, user, state)

    def _announce(self, announced: str, user: str, state: str) -> None:
        # The user's own tabs know already; "the others" are told.
        done = self.publish(
            announced,
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
        return await self._who(topic)

    @browser_errors
    async def here(self, topic: Any = None, details: Any = None) -> list[str]:
        """`tidings.presence.here(topic)`: the user ids now subscribed to a topic whose family
        declares presence (a chat room, a record)."""
        if not isinstance(topic, str) or catalogue.presence_of(topic) is None:
            raise ApplicationError(INVALID_ARGUMENT, "this topic has no presence (the catalogue)")
        caller = await self.directory.caller(details)
        if not caller.is_backend and not access.may_subscribe(caller.authid, caller.perms, topic):
            raise ApplicationError(NOT_AUTHORIZED, f"no permission to read {topic}")
        return await self._who(topic)

    async def _who(self, topic: str) -> list[str]:
        try:
            users: list[str] = await self._book(self.book.editors, topic)
        except Exception as exc:
            self.log.warn("presence store unreachable: {why}", why=exc)
            raise Unavailable("who is here cannot be told right now; try again") from None
        return users
