"""A lean WAMP subscriber over WebSocket (JSON), for bench audiences of thousands of sessions.

It does what a browser's session does on the wire — upgrade, HELLO with a ticket,
SUBSCRIBE, answer the router's pings, CALL (to recover from the history) — and no
more, so that a client process spends a few microseconds per event instead of
autobahn's hundred: with 1,000 sessions on one machine the clients would otherwise
be what the bench measures. Reconnecting is the owner's (harness.swarm): a session
is one connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from harness.websocket import CLOSE, PING, PONG, TEXT, client_frame, server_frame, upgrade_request

HELLO, WELCOME, ABORT, CHALLENGE, AUTHENTICATE, GOODBYE = 1, 2, 3, 4, 5, 6
SUBSCRIBE, SUBSCRIBED, EVENT, ERROR = 32, 33, 36, 8
CALL, RESULT = 48, 50
ROLES: dict[str, dict[str, Any]] = {"subscriber": {}, "caller": {}}

# Called with the event's payload and the time its bytes were read.
OnEvent = Callable[[dict[str, Any], float], None]


class CallError(Exception):
    """A CALL answered with ERROR; `error` is its URI (e.g. tidings.error.history_gap)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class WampSubscriber(asyncio.Protocol):
    """One session: joins `realm` as `user` with `ticket`, subscribes to `topic` if given."""

    def __init__(
        self, host: str, port: int, realm: str, ticket: str, topic: str | None, on_event: OnEvent
    ) -> None:
        self.host, self.port, self.realm = host, port, realm
        self.ticket = ticket
        self.topic = topic
        self.on_event = on_event
        self.joined: asyncio.Future[bool] = asyncio.get_event_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self.joined_at: float | None = None  # when it joined (and subscribed), epoch seconds
        self._next_request = 100  # 1 is the subscription's

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(upgrade_request(self.host, self.port))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._buffer += data
        if not self._upgraded and not self._read_upgrade():
            return
        for opcode, payload in self._frames():
            if opcode == TEXT:
                self._on_message(json.loads(payload), now)
            elif opcode == PING:
                self._send_frame(PONG, payload)
            elif opcode == CLOSE:
                # Answered with its status code, as a browser does: the router then
                # drops the connection at once, not after its close handshake timeout.
                self._fail()
                self._send_frame(CLOSE, payload[:2])
                self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()
        for answer in self._calls.values():
            if not answer.done():
                answer.set_exception(ConnectionError("the connection was lost"))
        self._calls.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- WebSocket

    def _read_upgrade(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(self._buffer[: self._buffer.find(b"\r\n")])
        del self._buffer[: end + 4]
        if b" 101 " not in status:
            self._fail()
            self.transport.close()  # type: ignore[union-attr]
            return False
        self._upgraded = True
        self._send([HELLO, self.realm, {"roles": ROLES, "authmethods": ["ticket"]}])
        return True

    def _frames(self) -> list[tuple[int, bytes]]:
        """Whole frames in the buffer, taken out of it."""
        frames = []
        at = 0
        while (frame := server_frame(self._buffer, at)) is not None:
            opcode, payload, at = frame
            frames.append((opcode, payload))
        del self._buffer[:at]
        return frames

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        self.transport.write(client_frame(payload, opcode))  # type: ignore[union-attr]

    def _send(self, message: list[Any]) -> None:
        self._send_frame(TEXT, json.dumps(message).encode())

    # -- WAMP

    def call(self, procedure: str, *args: Any) -> asyncio.Future[Any]:
        """CALL `procedure`; the future gets the first result argument (None if there is
        none), or CallError, or ConnectionError if the connection goes first."""
        answer: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            answer.set_exception(ConnectionError("not connected"))
            return answer
        self._next_request += 1
        self._calls[self._next_request] = answer
        self._send([CALL, self._next_request, {}, procedure, list(args)])
        return answer

    def _on_message(self, message: list[Any], now: float) -> None:
        kind = message[0]
        if kind == EVENT:
            args = message[4] if len(message) > 4 else []
            self.on_event(args[0] if args else message[5], now)
        elif kind == CHALLENGE:
            self._send([AUTHENTICATE, self.ticket, {}])
        elif kind == WELCOME:
            if self.topic is None:
                self._settle(True)
            else:
                self._send([SUBSCRIBE, 1, {}, self.topic])
        elif kind == SUBSCRIBED:
            self._settle(True)
        elif kind == RESULT:
            answer = self._calls.pop(message[1], None)
            if answer is not None and not answer.done():
                args = message[3] if len(message) > 3 else []
                answer.set_result(args[0] if args else None)
        elif kind == ERROR and message[1] == CALL:
            answer = self._calls.pop(message[2], None)
            if answer is not None and not answer.done():
                answer.set_exception(CallError(str(message[4])))
        elif kind in (ABORT, ERROR, GOODBYE):
            self._fail()
            self.transport.close()  # type: ignore[union-attr]

    def _settle(self, ok: bool) -> None:
        if not self.joined.done():
            if ok:
                self.joined_at = time.time()
            self.joined.set_result(ok)

    def _fail(self) -> None:
        self._settle(False)
