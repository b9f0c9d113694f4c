"""Header tables read by their shape: the bytes of a producer's last tables but for their texts.

One producer sends the same header table again and again with a few texts
changed: a Celery task's twenty entries differ from the last task's in
`id`, `root_id` and `argsrepr`. Reading all twenty, entry by entry, was a
third of a worker's instructions per task. A shape is what stays: the
entries' bytes, keys, kinds and values but for the text values, each run of
them compared in one `startswith`; the texts in between are read, and the
table is the shape's values with them. Any other byte, and a text that is not
UTF-8, fails the shape: the table is read entry by entry, as before, and its
shape learned. So a table read by shape is the table read entry by entry.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

# The kinds of value in an AMQP table (also read by workers.amqp_properties).
TEXT, VOID, BOOL, INT, ARRAY, TABLE = b"SVtIAF"
# An array of two voids, its length first: Celery's `timelimit` when none is set.
TWO_VOIDS = struct.pack(">I", 2) + b"VV"
u32 = struct.Struct(">I").unpack_from
# Entries of these kinds are compared whole: their size after the kind.
_SIZES = {VOID: 0, BOOL: 1, INT: 4}
# Values that are made anew for each table (they can be changed): Celery's
# `timelimit` of two voids, and its empty `stamps`.
_EMPTY = struct.pack(">I", 0)
# Shapes kept, the last one read first; a table of none of them is learned as
# one (every so often only, once all are taken: a producer whose every table
# differs costs a few comparisons per table, not a walk more).
MAX_SHAPES = 4
LEARN_EVERY = 16
# Larger tables are not learned: a Celery task's is about 600 bytes, and a
# producer's huge tables must not make every other table's misses dear.
MAX_SHAPE_BYTES = 4096


class Shape:
    """A header table but for its text values: see the module docstring."""

    __slots__ = ("fresh", "steps", "tail", "values")

    def __init__(
        self,
        steps: tuple[tuple[bytes, int, str], ...],
        tail: bytes,
        values: dict[str, Any],
        fresh: tuple[tuple[str, Callable[[], Any]], ...],
    ) -> None:
        self.steps = steps  # (bytes up to a text's length, their size, the text's key)
        self.tail = tail  # the bytes after the last text
        self.values = values  # every key in order, a text's value a placeholder
        self.fresh = fresh  # keys whose values are made anew, and how


# Replaced whole, never changed in place: a thread reading it meanwhile reads
# one version or the other.
_shapes: tuple[Shape, ...] = ()
_misses = 0


def read(buf: bytes, offset: int, end: int) -> dict[str, Any] | None:
    """The table from `offset` to `end`, if it has a known shape; else None."""
    global _shapes
    shapes = _shapes
    if end > len(buf):
        return None  # a table past its frame: read entry by entry, failing as it did
    for index, shape in enumerate(shapes):
        table = _read(shape, buf, offset, end)
        if table is not None:
            if index:
                _shapes = (shape, *shapes[:index], *shapes[index + 1 :])
            return table
    return None


def _read(shape: Shape, buf: bytes, offset: int, end: int) -> dict[str, Any] | None:
    tail = shape.tail
    if end < offset + len(tail) or not buf.startswith(tail, end - len(tail)):
        return None  # the last bytes first: shapes that differ late cost no walk
    table = shape.values.copy()  # at most MAX_SHAPE_BYTES of entries
    for same, size, key in shape.steps:
        start = offset + size + 4
        if start > end or not buf.startswith(same, offset):
            return None  # past the table's end: py-amqp stops there, so must this
        offset = start + u32(buf, offset + size)[0]
        try:
            table[key] = buf[start:offset].decode()
        except UnicodeDecodeError:
            return None  # read entry by entry: the tolerant decoder must see it
    if offset + len(tail) != end:
        return None
    for key, make in shape.fresh:
        table[key] = make()
    return table


def learn(buf: bytes, offset: int, end: int, table: dict[Any, Any]) -> None:
    """Keep the shape of the table just read entry by entry from `offset` to `end`
    (`table`), if it has one and this is the time to learn it."""
    global _misses, _shapes
    _misses += 1
    if len(_shapes) >= MAX_SHAPES and _misses % LEARN_EVERY:
        return
    if end - offset > MAX_SHAPE_BYTES:
        return
    shape = _shape(buf, offset, end, table)
    if shape is not None and not any(
        s.steps == shape.steps and s.tail == shape.tail for s in _shapes
    ):  # a known shape missed (a text with a surrogate): not kept twice
        _shapes = (shape, *_shapes[: MAX_SHAPES - 1])


def _shape(buf: bytes, offset: int, end: int, table: dict[Any, Any]) -> Shape | None:
    steps: list[tuple[bytes, int, str]] = []
    fresh: list[tuple[str, Callable[[], Any]]] = []
    values: dict[str, Any] = {}
    same_from = offset
    while offset < end:
        key_end = offset + 1 + buf[offset]
        try:
            key = buf[offset + 1 : key_end].decode()
        except UnicodeDecodeError:
            return None
        if key in values or key not in table:
            return None  # a key twice: its value is the last one's, in the first one's place
        kind = buf[key_end]
        offset = key_end + 1
        if kind == TEXT:
            if type(table[key]) is not str:
                return None
            steps.append((buf[same_from:offset], offset - same_from, key))
            offset += 4 + u32(buf, offset)[0]
            same_from = offset
            values[key] = None
            continue
        size = _SIZES.get(kind)
        if size is not None:
            values[key] = table[key]
        elif kind == ARRAY and buf.startswith(TWO_VOIDS, offset):
            size, values[key] = len(TWO_VOIDS), None
            fresh.append((key, _two_voids))
        elif kind == TABLE and buf.startswith(_EMPTY, offset):
            size, values[key] = len(_EMPTY), None
            fresh.append((key, dict))
        else:
            return None  # rarer kinds are read entry by entry
        offset += size
    if offset != end or list(values) != list(table):
        return None
    return Shape(tuple(steps), buf[same_from:end], values, tuple(fresh))


def _two_voids() -> list[None]:
    return [None, None]
