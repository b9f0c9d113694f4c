"""Client-side WebSocket framing: the little a bare client needs to talk WAMP to the router."""

from __future__ import annotations

import base64
import os
import struct

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def upgrade_request(host: str, port: int, path: str = "/ws") -> bytes:
    """The HTTP request that opens a WAMP-over-JSON WebSocket."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
    ).encode()


def client_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One final frame. Client frames must be masked; a zero mask leaves the payload as it is."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + b"\0\0\0\0" + payload


def server_frame(buffer: bytes | bytearray, at: int = 0) -> tuple[int, bytes, int] | None:
    """(opcode, payload, end) of the frame at `at`, or None if it is not all there yet.

    The router sends frames unmasked and unfragmented.
    """
    if len(buffer) - at < 2:
        return None
    opcode = buffer[at] & 0x0F
    length = buffer[at + 1] & 0x7F
    head = 2
    if length == 126:
        if len(buffer) - at < 4:
            return None
        (length,) = struct.unpack_from("!H", buffer, at + 2)
        head = 4
    elif length == 127:
        if len(buffer) - at < 10:
            return None
        (length,) = struct.unpack_from("!Q", buffer, at + 2)
        head = 10
    end = at + head + length
    if len(buffer) < end:
        return None
    return opcode, bytes(buffer[at + head : end]), end
