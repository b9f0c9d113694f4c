"""A delivered message decoded in one step: its Basic.Deliver, header and body frames at once.

py-amqp takes the three frames one by one: a `Message` built up part by part,
a generic argument decoder driven by a format string, a dispatch through
dictionaries and a `KeyError` raised and caught per message (the lookup of a
pending reply). When all three frames of a delivery are already in the
transport's buffer, as they are for nearly every message of a busy queue,
`locate` finds them and `deliver` decodes them with the same functions and
rules as py-amqp, then calls py-amqp's own deliver handler with the message
kombu would have made of it, so the consumer callback sees what it would have
seen.
"""

from __future__ import annotations

import struct
from typing import Any

from amqp import spec
from kombu.transport import base, pyamqp

from workers.amqp_properties import decode_properties_basic
from workers.amqp_tolerance import text

FRAME_END = 0xCE
METHOD, HEADER, BODY = 1, 2, 3
_DELIVER = struct.pack(">HH", *spec.Basic.Deliver)
# A frame starts with its type, channel and payload size.
frame_header = struct.Struct(">BHI").unpack_from
_content_header = struct.Struct(">HxxQ").unpack_from
_tag_and_flag = struct.Struct(">QB").unpack_from


class Received(pyamqp.Message):  # type: ignore[misc]
    """A delivered message made as kombu's own at once: kombu's consumer takes it as it
    is (amqp_transport.Channel), instead of wrapping a py-amqp message in a new one
    through two constructors that take every field by keyword."""

    __slots__ = ()


def received(body: bytes | str, properties: dict[str, Any], delivery_tag: int) -> Received:
    """The message kombu would make of this delivery (its channel and delivery_info are
    set by py-amqp's deliver handler)."""
    message = _new(Received)
    headers = properties.get("application_headers") or {}
    if headers.get("compression"):
        # kombu's constructor decompresses, or keeps the error for the consumer.
        base.Message.__init__(
            message,
            body=body,
            delivery_tag=delivery_tag,
            content_type=properties.get("content_type"),
            content_encoding=properties.get("content_encoding"),
            properties=properties,
            headers=headers,
        )
        return message
    message.body = body
    message.delivery_tag = delivery_tag
    message.content_type = properties.get("content_type")
    message.content_encoding = properties.get("content_encoding")
    message.properties = properties
    message.headers = headers
    message._decoded_cache = None
    message._state = "RECEIVED"
    message.accept = None
    return message


_new = object.__new__


# Where the frames of one delivery lie in a buffer: its channel, where the
# Deliver's arguments start, where the header's property flags start, where
# the body starts and ends, and where the next frame starts.
Located = tuple[int, int, int, int, int, int]


def locate(buffer: bytes, offset: int) -> Located | None:
    """The delivery whose three frames are whole in `buffer` from `offset`, or None.

    None as well for anything py-amqp must see frame by frame: another method,
    a body in several frames or none, a frame without its end octet (py-amqp
    then raises, as it should).
    """
    size = len(buffer)
    if size - offset < 11 or buffer[offset] != METHOD:
        return None
    if buffer[offset + 7 : offset + 11] != _DELIVER:
        return None
    _, channel, length = frame_header(buffer, offset)
    header = offset + 8 + length
    if size < header + 7 or buffer[header - 1] != FRAME_END:
        return None
    kind, header_channel, length = frame_header(buffer, header)
    body = header + 8 + length
    if kind != HEADER or header_channel != channel or length < 12 or size < body + 7:
        return None
    if buffer[body - 1] != FRAME_END:
        return None
    class_id, body_size = _content_header(buffer, header + 7)
    kind, body_channel, length = frame_header(buffer, body)
    end = body + 7 + length
    if kind != BODY or body_channel != channel or class_id != spec.Basic.CLASS_ID:
        return None
    if length != body_size or length == 0 or size <= end or buffer[end] != FRAME_END:
        return None
    return channel, offset + 11, header + 19, body + 7, end, end + 1


def _short_text(buffer: bytes, offset: int) -> tuple[str, int]:
    end = offset + 1 + buffer[offset]
    raw = buffer[offset + 1 : end]
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        # Tolerant, as py-amqp's own reader is with amqp_tolerance installed: a routing
        # key that is not UTF-8 costs its message (dead-lettered), not the consumer.
        return text(raw), end


def deliver(channel: Any, buffer: bytes, located: Located) -> None:
    """Decode the located delivery and hand it to `channel` as py-amqp would."""
    _, arguments, flags, body_start, body_end, _ = located
    consumer_tag, offset = _short_text(buffer, arguments)
    delivery_tag, redelivered = _tag_and_flag(buffer, offset)
    exchange, offset = _short_text(buffer, offset + 9)
    routing_key, _ = _short_text(buffer, offset)
    # The header frame alone, as py-amqp reads it: a table whose length runs past
    # its frame fails there, instead of reading the body and the frames behind.
    properties, _ = decode_properties_basic(buffer[flags - 12 : body_start - 8], 12)
    body: bytes | str = buffer[body_start:body_end]
    encoding = properties.get("content_encoding")
    if encoding is not None and channel.auto_decode:
        try:  # noqa: SIM105 (suppress() builds a context manager per message)
            body = body.decode(encoding)  # type: ignore[union-attr]
        except Exception:
            pass  # as py-amqp: the body stays bytes
    channel._on_basic_deliver(
        consumer_tag,
        delivery_tag,
        bool(redelivered & 1),
        exchange,
        routing_key,
        received(body, properties, delivery_tag),
    )
