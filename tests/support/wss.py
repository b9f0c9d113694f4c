"""A browser-like WAMP client over wss:// (through a TLS proxy), trusting a given certificate.

The project's own client (publisher.connection) speaks rs:// and ws:// only;
this one connects once, signs in with a ticket, subscribes, and records every
event, or the reason the connection ended before it joined.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory, WampWebSocketClientProtocol
from autobahn.wamp.serializer import JsonSerializer
from autobahn.wamp.types import ComponentConfig

from harness.clients import ticket
from tidings.names import REALM


class WssClient:
    """One WAMP session over wss://, on its own event loop in a daemon thread."""

    def __init__(
        self,
        url: str,
        context: ssl.SSLContext,
        user: str,
        topics: Iterable[str] = (),
        perms: Iterable[str] = (),
    ) -> None:
        self.url = url
        self.context = context
        self.user = user
        self.topics = list(topics)
        self.perms = list(perms)
        self.events: list[Any] = []
        self.joined = threading.Event()
        self.ended = threading.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._session: ApplicationSession | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="wss")

    def _run(self) -> None:
        # autobahn (through txaio) looks its loop up as the thread's current one.
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def start(self, timeout: float = 10) -> WssClient:
        """Connect and wait until the session joined and subscribed, or the connection ended."""
        self._thread.start()
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 443
        connect = self._loop.create_connection(
            self._factory(), host, port, ssl=self.context, server_hostname=host
        )
        asyncio.run_coroutine_threadsafe(connect, self._loop).result(timeout)
        deadline = time.monotonic() + timeout
        while not (self.joined.is_set() or self.ended.is_set()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no session over {self.url} within {timeout}s")
            time.sleep(0.02)
        return self

    def _factory(self) -> WampWebSocketClientFactory:
        client = self

        class Session(ApplicationSession):  # type: ignore[misc]
            def onConnect(self) -> None:
                client._session = self
                self.join(REALM, authmethods=["ticket"])

            def onChallenge(self, challenge: Any) -> str:
                return ticket(client.user, client.perms)

            async def onJoin(self, details: Any) -> None:
                for topic in client.topics:
                    await self.subscribe(client._on_event, topic)
                client.joined.set()

            def onLeave(self, details: Any) -> None:
                client.close_reason = client.close_reason or str(details.reason)
                self.disconnect()

        class Protocol(WampWebSocketClientProtocol):  # type: ignore[misc]
            def onClose(self, wasClean: bool, code: int, reason: str | None) -> None:
                client.close_code, client.close_reason = code, reason
                super().onClose(wasClean, code, reason)
                client.ended.set()

        factory = WampWebSocketClientFactory(
            lambda: Session(ComponentConfig(realm=REALM)),
            url=self.url,
            serializers=[JsonSerializer()],
            loop=self._loop,  # made on the test's thread: its loop is not the current one
        )
        factory.protocol = Protocol
        return factory

    def _on_event(self, *args: Any, **kwargs: Any) -> None:
        with self._cond:
            self.events.append(args[0] if args else kwargs)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 10) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s; events: {self.events[-5:]}")
                self._cond.wait(left)
            return list(self.events)

    def close(self) -> None:
        async def leave() -> None:
            session = self._session
            if session is not None and session.is_attached():
                session.leave()
            elif session is not None and session._transport is not None:
                session._transport.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(leave(), self._loop).result(5)
            deadline = time.monotonic() + 5
            while not self.ended.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> WssClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
