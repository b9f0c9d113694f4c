"""A stand-in router for the lean client's tests: WebSocket upgrade, ticket sign-in,
SUBSCRIBE, EVENT and `tidings.history.since` in pages, on an asyncio loop of its own
thread, stopped and started again on the same port like a restarted router."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
import time
from concurrent.futures import Future
from typing import Any

from harness.ports import free_port
from harness.websocket import CLOSE, PING, TEXT

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAGE = 4  # events per history answer: catching up takes several calls


def _frame(payload: bytes, opcode: int = TEXT) -> bytes:
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, length) + payload


def _client_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Whole masked client frames, taken out of `buffer`."""
    frames = []
    while len(buffer) >= 2:
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        at = 2
        if length == 126:
            (length,) = struct.unpack_from("!H", buffer, 2)
            at = 4
        elif length == 127:
            (length,) = struct.unpack_from("!Q", buffer, 2)
            at = 10
        if len(buffer) < at + 4 + length:
            break
        mask = buffer[at : at + 4]
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[at + 4 : at + 4 + length]))
        del buffer[: at + 4 + length]
        frames.append((opcode, data))
    return frames


class _Connection(asyncio.Protocol):
    def __init__(self, router: FakeRouter) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.subscribed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.router.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.router.connections.discard(self)

    def send(self, message: list[Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(json.dumps(message).encode()))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode()
            del self.buffer[: end + 4]
            key = next(
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            assert self.transport is not None
            self.transport.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                    "Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
                ).encode()
            )
            self.upgraded = True
        for opcode, payload in _client_frames(self.buffer):
            if opcode == TEXT:
                self.on_message(json.loads(payload))
            elif opcode == CLOSE and self.transport is not None:
                self.router.closes.append(payload)
                self.transport.close()
            elif opcode == PING:
                pass

    def on_message(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == 1:  # HELLO
            self.router.hellos.append(message[2])
            self.send([4, "ticket", {}])
        elif kind == 5:  # AUTHENTICATE
            self.router.tickets.append(message[1])
            self.send([2, len(self.router.tickets), {"authrole": "frontend"}])
        elif kind == 32:  # SUBSCRIBE
            self.subscribed = True
            reply = _frame(json.dumps([33, message[1], 1]).encode())
            if self.router.greet and self.router.history:
                event = [36, 1, 0, {}, [self.router.history[-1]]]
                reply += _frame(json.dumps(event).encode())
            assert self.transport is not None
            self.transport.write(reply)
        elif kind == 48:  # CALL
            request, procedure, args = message[1], message[3], message[4]
            self.router.calls.append((procedure, args))
            if self.router.silent:
                return
            if self.router.error:
                self.send([8, 48, request, {}, self.router.error])
            elif procedure == "tidings.history.since":
                self.send([50, request, {}, [self.router.since(args[1])]])
            else:
                self.send([50, request, {}, []])


class FakeRouter:
    """`publish(n)` records event n in the history and sends it to every subscriber;
    `stop()` drops every connection and listens no more; `start()` listens again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.history: list[dict[str, Any]] = []
        self.connections: set[_Connection] = set()
        self.hellos: list[dict[str, Any]] = []
        self.tickets: list[str] = []
        self.calls: list[tuple[str, list[Any]]] = []
        self.error: str | None = None  # every CALL fails with it
        self.silent = False  # CALLs get no answer
        self.greet = False  # the last event right behind SUBSCRIBED, in the same write
        self.closes: list[bytes] = []  # the payloads of clients' CLOSE frames
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _run(self, call: Any) -> Any:
        done: Future[Any] = Future()

        def run() -> None:
            try:
                result = call()
                if asyncio.iscoroutine(result):
                    task = self.loop.create_task(result)
                    task.add_done_callback(lambda t: done.set_result(t.result()))
                else:
                    done.set_result(result)
            except Exception as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(10)

    def start(self) -> FakeRouter:
        async def listen() -> None:
            self._server = await self.loop.create_server(
                lambda: _Connection(self), "127.0.0.1", self.port, reuse_address=True
            )

        self._run(listen)
        return self

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for connection in list(self.connections):
                assert connection.transport is not None
                connection.transport.abort()

        self._run(close)

    def say_goodbye(self, code: int = 1001) -> None:
        """A CLOSE frame to every connection (going away), as a router shutting down."""

        def send() -> None:
            for connection in self.connections:
                assert connection.transport is not None
                connection.transport.write(_frame(struct.pack("!H", code), CLOSE))

        self._run(send)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def subscribers(self) -> int:
        return self._run(lambda: sum(1 for c in self.connections if c.subscribed))

    def publish(self, n: int) -> None:
        event = {"n": n, "t": time.time(), "event_id": f"e{n}", "position": f"ep:{n + 1}"}

        def send() -> None:
            self.history.append(event)
            for connection in self.connections:
                if connection.subscribed:
                    connection.send([36, 1, n, {}, [event]])

        self._run(send)

    def since(self, after: str | None) -> list[dict[str, Any]]:
        start = 0
        if after is not None:
            start = next(
                (
                    i + 1
                    for i, e in enumerate(self.history)
                    if after in (e["position"], e["event_id"])
                ),
                0,
            )
        return self.history[start : start + PAGE]
