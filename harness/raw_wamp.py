"""A WAMP-over-WebSocket client on a bare socket: it sends what a test tells it, reads only when
told, and so can behave as no library client would (stop reading, never sign in, flood)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from harness.clients import ticket
from harness.websocket import CLOSE, PING, PONG, TEXT, client_frame, server_frame, upgrade_request

HELLO, WELCOME, ABORT, CHALLENGE, AUTHENTICATE = 1, 2, 3, 4, 5


class RawWamp:
    """One connection to the router's WebSocket, WAMP in JSON."""

    def __init__(
        self, url: str, *, rcvbuf: int | None = None, headers: dict[str, str] | None = None
    ):
        self.url = url
        self.rcvbuf = rcvbuf
        self.headers = headers or {}
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.status = ""
        self.session_id: int | None = None
        self.welcome: list[Any] = []
        self.closed = False

    def open(self, timeout: float = 10) -> RawWamp:
        """Connect and upgrade to a WebSocket; raises if the router refuses."""
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            # Before connect, so that the TCP window is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        self.sock = sock
        request = upgrade_request(host, port, parts.path or "/")
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        sock.sendall(request[:-2] + extra.encode() + b"\r\n")
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if " 101 " not in self.status:
            raise ConnectionRefusedError(f"WebSocket upgrade refused: {self.status}")
        return self

    def join(self, user: str, perms: list[str] | None = None) -> int:
        """Sign in with a fresh ticket; the session id."""
        self.send(
            [
                HELLO,
                "tidings",
                {"roles": {"subscriber": {}, "caller": {}}, "authmethods": ["ticket"]},
            ]
        )
        challenge = self.read()
        if challenge[0] != CHALLENGE:
            raise RuntimeError(f"expected CHALLENGE, got {challenge}")
        self.send([AUTHENTICATE, ticket(user, perms or []), {}])
        welcome = self.read()
        if welcome[0] != WELCOME:
            raise RuntimeError(f"expected WELCOME, got {welcome}")
        self.session_id, self.welcome = int(welcome[1]), welcome
        return self.session_id

    def send(self, message: list[Any]) -> None:
        assert self.sock is not None
        self.sock.sendall(client_frame(json.dumps(message).encode()))

    def read(self, timeout: float = 10) -> list[Any]:
        """The next WAMP message (answering pings on the way); ConnectionError once closed."""
        assert self.sock is not None
        self.sock.settimeout(timeout)
        while True:
            frame = server_frame(self.buffer)
            if frame is not None:
                opcode, payload, end = frame
                self.buffer = self.buffer[end:]
                if opcode == TEXT:
                    return list(json.loads(payload))
                if opcode == CLOSE:
                    raise ConnectionError(f"the router closed the WebSocket: {payload[2:]!r}")
                if opcode == PING:
                    self.sock.sendall(client_frame(payload, PONG))
                continue
            self.buffer += self._recv()

    def closed_by_router(self, timeout: float = 0.0) -> bool:
        """Whether the router has closed the connection, waiting up to `timeout`
        (reads what is waiting; WAMP messages read on the way are kept)."""
        assert self.sock is not None
        if self.closed:
            return True
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return False
            except OSError:
                self.closed = True
                return True
            if not data:
                self.closed = True
                return True
            self.buffer += data
            kept = b""
            while (frame := server_frame(self.buffer)) is not None:
                opcode, _, end = frame
                if opcode == CLOSE:
                    self.closed = True
                    return True
                if opcode == TEXT:
                    kept += self.buffer[:end]
                self.buffer = self.buffer[end:]
            self.buffer = kept + self.buffer

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _recv(self) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the router closed the connection")
        return data
