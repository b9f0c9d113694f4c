"""Chat rooms: `tidings.chat.send(room, text)`, checked here and carried by the durable pipeline.

A router-side component (`.crossbar/config.json`). A member of a room (a
ticket holding `chat:<room>:join`, as the catalogue declares for
`tidings.chat.{room}`) sends; this checks membership, size and the sender's
rate, stamps `from` (the caller's authid, never an argument), `at` and an
`event_id`, and enqueues the message as a raw event (router.enqueue). The
answer `{"event_id": ...}` comes once RabbitMQ has confirmed it: an answered
message is never lost. A worker publishes it to the room like any event;
the room's history and presence are those of any topic that declares them.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from router import meters
from router.enqueue import Enqueuer
from router.principals import SessionDirectory, browser_errors, require_name
from router.session_limits import Bucket
from tidings import access, catalogue
from tidings.errors import INVALID_ARGUMENT, NOT_AUTHORIZED, RATE_LIMITED, Unavailable
from tidings.events import new_event_id, now_iso
from tidings.names import CHAT_SEND_PROCEDURE
from tidings.settings import Settings

MAX_TEXT_BYTES = 4096
# Senders whose rate is remembered; the quietest are forgotten beyond this.
MAX_SENDERS = 10_000


class Chat(ApplicationSession):  # type: ignore[misc]
    """Registers `tidings.chat.send` (see the module docstring)."""

    async def onJoin(self, details: Any) -> None:
        config = Settings.from_environ(os.environ)
        self.rate = config.limits.chat_rate
        self.enqueuer = Enqueuer(config.broker_url)
        self.senders: dict[str, Bucket] = {}
        self.directory = SessionDirectory(self)
        await self.directory.attach()
        await self.register(
            self.send, CHAT_SEND_PROCEDURE, options=RegisterOptions(details_arg="details")
        )
        meters.ready("chat")
        self.log.info("chat ready: at most {rate:g} messages a second per user", rate=self.rate)

    def onLeave(self, details: Any) -> None:
        meters.ready("chat", "left the realm")
        self.enqueuer.close()
        super().onLeave(details)

    @browser_errors
    async def send(self, room: Any = None, text: Any = None, details: Any = None) -> dict:
        """`tidings.chat.send(room, text)` → `{"event_id": ...}` once the broker has it."""
        room = require_name(room, "room")
        topic = catalogue.chat_topic(room)
        if catalogue.lookup(topic) is None:
            raise ApplicationError(INVALID_ARGUMENT, "no chat rooms are declared (the catalogue)")
        if not isinstance(text, str) or not text.strip():
            raise ApplicationError(INVALID_ARGUMENT, "text must be a non-empty string")
        if len(text.encode()) > MAX_TEXT_BYTES:
            raise ApplicationError(INVALID_ARGUMENT, f"text is at most {MAX_TEXT_BYTES} bytes")
        caller = await self.directory.caller(details)
        if not access.may_subscribe(caller.authid, caller.perms, topic):
            raise ApplicationError(NOT_AUTHORIZED, f"not a member of {room}")
        if not self._within_rate(caller.authid):
            raise ApplicationError(RATE_LIMITED, f"at most {self.rate:g} messages per second")
        event_id = new_event_id()
        message = {
            "room": room,
            "from": caller.authid,
            "text": text,
            "at": now_iso(),
        }
        event = {"event_id": event_id, "type": "publish", "topic": topic, "payload": message}
        body = json.dumps(event, ensure_ascii=False).encode()
        try:
            await self._queued(body)
        except Exception as exc:
            self.log.warn("chat message not queued: {why}", why=exc)
            raise Unavailable("the message could not be queued; send it again") from None
        return {"event_id": event_id}

    def _queued(self, body: bytes) -> Deferred:
        """Fires once the broker has confirmed the message (the enqueuer's thread reports)."""
        queued: Deferred = Deferred()

        def done(error: BaseException | None) -> None:
            if error is None:
                reactor.callFromThread(queued.callback, None)
            else:
                reactor.callFromThread(queued.errback, error)

        self.enqueuer.send(body, "publish", done)
        return queued

    def _within_rate(self, user: str) -> bool:
        now = time.monotonic()
        bucket = self.senders.get(user)
        if bucket is None:
            if len(self.senders) >= MAX_SENDERS:
                idle = sorted(self.senders, key=lambda u: self.senders[u].stamp)
                for quiet in idle[: MAX_SENDERS // 10]:
                    del self.senders[quiet]
            bucket = self.senders[user] = Bucket(self.rate, now)
        return bucket.take(now)
