"""A lean WAMP subscriber over WebSocket (JSON), for bench audiences of thousands of sessions.

It does what a browser's session does on the wire — upgrade, HELLO with a ticket,
SUBSCRIBE, answer the router's pings — and no more, so that a client process
spends a few microseconds per event instead of autobahn's hundred: with 1,000
sessions on one machine the clients would otherwise be what the bench measures.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Callable
from typing import Any

HELLO, WELCOME, ABORT, CHALLENGE, AUTHENTICATE, GOODBYE = 1, 2, 3, 4, 5, 6
SUBSCRIBE, SUBSCRIBED, EVENT, ERROR = 32, 33, 36, 8
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA

# Called with the event's payload and the time its bytes were read.
OnEvent = Callable[[dict[str, Any], float], None]


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

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._buffer += data
        if not self._upgraded and not self._read_upgrade():
            return
        for opcode, payload in self._frames():
            if opcode == _TEXT:
                self._on_message(json.loads(payload), now)
            elif opcode == _PING:
                self._send_frame(_PONG, payload)
            elif opcode == _CLOSE:
                self._fail()
                self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()
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
        self._send([HELLO, self.realm, {"roles": {"subscriber": {}}, "authmethods": ["ticket"]}])
        return True

    def _frames(self) -> list[tuple[int, bytes]]:
        """Whole frames in the buffer (the router sends them unmasked and unfragmented)."""
        frames = []
        buffer = self._buffer
        at = 0
        while len(buffer) - at >= 2:
            opcode = buffer[at] & 0x0F
            length = buffer[at + 1] & 0x7F
            head = 2
            if length == 126:
                if len(buffer) - at < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, at + 2)
                head = 4
            elif length == 127:
                if len(buffer) - at < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, at + 2)
                head = 10
            if len(buffer) - at < head + length:
                break
            frames.append((opcode, bytes(buffer[at + head : at + head + length])))
            at += head + length
        del buffer[:at]
        return frames

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        # Client frames must be masked; a zero mask leaves the payload as it is.
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        self.transport.write(head + b"\0\0\0\0" + payload)  # type: ignore[union-attr]

    def _send(self, message: list[Any]) -> None:
        self._send_frame(_TEXT, json.dumps(message).encode())

    # -- WAMP

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
        elif kind in (ABORT, ERROR, GOODBYE):
            self._fail()
            self.transport.close()  # type: ignore[union-attr]

    def _settle(self, ok: bool) -> None:
        if not self.joined.done():
            self.joined.set_result(ok)

    def _fail(self) -> None:
        self._settle(False)
