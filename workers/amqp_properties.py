"""A message's basic properties decoded as py-amqp decodes them, its header table quicker.

A Celery task carries a header table of some twenty entries, which py-amqp
reads with a generic decoder driven by a format string and a chain of tests
per value: a fifth of a worker's CPU per task. This reads the same bytes into
the same values, reading the top table's keys (known ones from a cache), text,
void, booleans, 32-bit integers and an array of two voids directly; every
other kind of value, nested tables and arrays included, goes to py-amqp's own
reader. Text that is not valid UTF-8 is
decoded by py-amqp's `pstr_t` (which workers.amqp_tolerance may replace, so
it is looked up at each call).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import amqp.serialization

from workers import header_shapes
from workers.header_shapes import ARRAY, BOOL, INT, TEXT, TWO_VOIDS, VOID, u32

_u16 = struct.Struct(">H").unpack_from
_i32 = struct.Struct(">i").unpack_from
_u64 = struct.Struct(">Q").unpack_from

Text = Callable[[bytes], Any]

# The basic properties in the order of their flag bits, from the highest, with
# their kind: short text, a table, an octet, a 64-bit timestamp.
_PROPERTIES = (
    (0x8000, "content_type", "s"),
    (0x4000, "content_encoding", "s"),
    (0x2000, "application_headers", "F"),
    (0x1000, "delivery_mode", "o"),
    (0x0800, "priority", "o"),
    (0x0400, "correlation_id", "s"),
    (0x0200, "reply_to", "s"),
    (0x0100, "expiration", "s"),
    (0x0080, "message_id", "s"),
    (0x0040, "timestamp", "L"),
    (0x0020, "type", "s"),
    (0x0010, "user_id", "s"),
    (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),
)


def decode_properties_basic(buf: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """The properties starting at `offset` (their flags) and where they end, as
    `amqp.serialization.decode_properties_basic` gives them."""
    text: Text = amqp.serialization.pstr_t  # type: ignore[attr-defined]
    properties: dict[str, Any] = {}
    (flags,) = _u16(buf, offset)
    offset += 2
    present = _present.get(flags)
    if present is None:
        present = [(n, k) for bit, n, k in _PROPERTIES if flags & bit]
        if len(_present) < _MAX_FLAGS:
            _present[flags] = present
    for name, kind in present:
        if kind == "s":
            end = offset + 1 + buf[offset]
            raw = buf[offset + 1 : end]
            try:
                properties[name] = raw.decode()
            except UnicodeDecodeError:
                properties[name] = text(raw)
            offset = end
        elif kind == "F":
            (length,) = u32(buf, offset)
            start, end = offset + 4, offset + 4 + length
            table = header_shapes.read(buf, start, end) if length else {}
            if table is None:
                table, offset = _table(buf, start, end, text)
                header_shapes.learn(buf, start, end, table)
            else:
                offset = end
            properties[name] = table
        elif kind == "o":
            properties[name] = buf[offset]
            offset += 1
        else:
            (properties[name],) = _u64(buf, offset)
            offset += 8
    return properties, offset


# The properties present, by their flags (a few combinations in any one deployment;
# a producer setting odd bits could make thousands, so only so many are kept).
_present: dict[int, list[tuple[str, str]]] = {}
_MAX_FLAGS = 64
# Table keys by their bytes: a task's header table repeats the same twenty names.
_keys: dict[bytes, str] = {}
_MAX_KEYS = 4096


def _table(buf: bytes, offset: int, end: int, text: Text) -> tuple[dict[Any, Any], int]:
    table: dict[Any, Any] = {}
    keys = _keys
    while offset < end:
        start = offset + 1
        offset = start + buf[offset]
        raw = buf[start:offset]
        key: Any = keys.get(raw)
        if key is None:
            try:
                key = raw.decode()
            except UnicodeDecodeError:
                key = _text(raw, text)  # never kept: the tolerant decoder must see it
            else:
                if len(keys) < _MAX_KEYS:
                    keys[raw] = key
        kind = buf[offset]
        if kind == TEXT:
            start = offset + 5
            offset = start + u32(buf, offset + 1)[0]
            raw = buf[start:offset]
            try:
                table[key] = raw.decode()
            except UnicodeDecodeError:
                table[key] = _text(raw, text)
        elif kind == VOID:
            table[key] = None
            offset += 1
        elif kind == INT:
            table[key] = _i32(buf, offset + 1)[0]
            offset += 5
        elif kind == BOOL:
            table[key] = bool(buf[offset + 1])
            offset += 2
        elif kind == ARRAY and buf[offset + 1 : offset + 7] == TWO_VOIDS:
            table[key] = [None, None]  # Celery's `timelimit` when none is set
            offset += 7
        else:
            # Nested tables and arrays too: py-amqp reads them with one frame of
            # the stack per level, and so as deep as it did before.
            table[key], offset = amqp.serialization._read_item(buf, offset)
    return table, offset


def _text(raw: bytes, text: Text) -> Any:
    # Valid UTF-8 (nearly all text) is decoded directly: py-amqp's `pstr_t`, and the
    # tolerant one, would decode it just so. The rest is theirs to decode.
    try:
        return raw.decode()
    except UnicodeDecodeError:
        pass
    try:
        return text(raw)
    except UnicodeDecodeError:
        return raw  # as py-amqp: a key or a long string it cannot decode stays bytes
