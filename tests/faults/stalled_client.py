"""A WAMP-over-WebSocket client on a bare socket that subscribes, then stops reading it."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

from harness.clients import ticket
from harness.websocket import client_frame, server_frame, upgrade_request


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
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so that the TCP window is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(timeout)
        sock.connect((host, port))
        self.sock = sock
        sock.sendall(upgrade_request(host, port, parts.path or "/"))
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
        self.sock.sendall(client_frame(json.dumps(message).encode()))

    def _read_message(self) -> list[Any]:
        while True:
            frame = server_frame(self._buffer)
            if frame is not None:
                opcode, payload, end = frame
                self._buffer = self._buffer[end:]
                if opcode == 0x1:
                    return list(json.loads(payload))
                if opcode == 0x8:
                    raise ConnectionError(f"router closed the WebSocket: {payload[2:]!r}")
                continue  # ping/pong during the handshake: not needed
            self._buffer += self._recv()
