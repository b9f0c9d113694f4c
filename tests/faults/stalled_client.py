"""A WAMP-over-WebSocket client on a bare socket that subscribes, then stops reading it."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

from tests.support.clients import ticket


class StalledSubscriber:
    """Joins with a ticket and subscribes, then never reads its socket again.

    A library client always drains its socket on a thread; this one does the
    handshake by hand so that, once subscribed, nothing reads: the kernel
    buffers fill and the router must keep or drop what it cannot send. A small
    receive buffer makes that happen after a few kilobytes, not megabytes.
    """

    def __init__(self, url: str, user: str, topic: str, perms: list[str] | None = None) -> None:
        self.url = url
        self.user = user
        self.topic = topic
        self.perms = perms or []
        self.sock: socket.socket | None = None
        self._buffer = b""

    def start(self, timeout: float = 10) -> StalledSubscriber:
        parts = urlsplit(self.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so that the TCP window is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(timeout)
        sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        self.sock = sock
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\n"
            f"Host: {parts.hostname}:{parts.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
        )
        sock.sendall(request.encode())
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"WebSocket upgrade refused: {head[:200]!r}")
        self._send([1, "tidings", {"roles": {"subscriber": {}}, "authmethods": ["ticket"]}])
        challenge = self._read_message()
        if challenge[0] != 4:
            raise RuntimeError(f"expected CHALLENGE, got {challenge}")
        self._send([5, ticket(self.user, self.perms), {}])
        welcome = self._read_message()
        if welcome[0] != 2:
            raise RuntimeError(f"expected WELCOME, got {welcome}")
        self._send([32, 1, {}, self.topic])
        subscribed = self._read_message()
        if subscribed[0] != 33:
            raise RuntimeError(f"expected SUBSCRIBED, got {subscribed}")
        return self

    @property
    def local_port(self) -> int:
        """The client's port: the router's side of the connection is found by it."""
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- framing ----------------------------------------------------------------
    def _recv(self) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("router closed the connection during the handshake")
        return data

    def _send(self, message: list[Any]) -> None:
        assert self.sock is not None
        self.sock.sendall(_frame(json.dumps(message).encode()))

    def _read_message(self) -> list[Any]:
        while True:
            frame = _parse(self._buffer)
            if frame is not None:
                opcode, payload, self._buffer = frame
                if opcode == 0x1:
                    return list(json.loads(payload))
                if opcode == 0x8:
                    raise ConnectionError(f"router closed the WebSocket: {payload[2:]!r}")
                continue  # ping/pong during the handshake: not needed
            self._buffer += self._recv()


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, masked frame (clients must mask)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def _parse(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """(opcode, payload, rest) of the first unmasked server frame, or None if incomplete."""
    if len(buffer) < 2:
        return None
    opcode = buffer[0] & 0x0F
    length = buffer[1] & 0x7F
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack("!H", buffer[2:4])
        offset = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,) = struct.unpack("!Q", buffer[2:10])
        offset = 10
    if len(buffer) < offset + length:
        return None
    return opcode, buffer[offset : offset + length], buffer[offset + length :]
