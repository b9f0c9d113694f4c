"""The workers' properties decoder gives what py-amqp's gives, for every kind of value."""

from __future__ import annotations

import random
import struct
from datetime import datetime
from decimal import Decimal
from typing import Any

import amqp
import amqp.serialization
import pytest

from workers import amqp_properties, amqp_tolerance
from workers.amqp_properties import decode_properties_basic


def _value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["text", "none", "bool", "int", "long", "float", "decimal", "time", "bytes"]
    if depth < 3:
        kinds += ["table", "list"]
    kind = rng.choice(kinds)
    if kind == "text":
        return rng.choice(["", "celery", "é ☃ 𝄞", "x" * rng.randint(0, 300)])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(2**31) + 1, 2**31 - 1)
    if kind == "long":
        return rng.choice([1, -1]) * rng.randint(2**31, 2**62)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "decimal":
        return Decimal(rng.randint(-(10**6), 10**6)) / 100
    if kind == "time":
        return datetime(2000 + rng.randint(0, 60), rng.randint(1, 12), 3, 4, 5, 6)
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 20)))
    if kind == "table":
        return {f"k{i}é": _value(rng, depth + 1) for i in range(rng.randint(0, 6))}
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    return None


def _properties(rng: random.Random) -> dict[str, Any]:
    every = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "application_headers": {
            "task": "tidings.publish",
            "v": _value(rng),
            "w": _value(rng),
            # Celery's time limits, read without py-amqp's reader when both are void.
            "timelimit": rng.choice([[None, None], [None], [None, None, None], [None, 5], []]),
        },
        "delivery_mode": 2,
        "priority": rng.randint(0, 9),
        "correlation_id": "c-1",
        "reply_to": "r",
        "expiration": "6000",
        "message_id": "m-é",
        "timestamp": rng.randint(0, 2**40),
        "type": "t",
        "user_id": "guest",
        "app_id": "a",
        "cluster_id": "",
    }
    return {k: v for k, v in every.items() if rng.random() < 0.6}


def _typed(value: Any) -> Any:
    """The value with every part's type, so that True and 1 differ."""
    if isinstance(value, dict):
        return {_typed(k): _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def _both(buf: bytes) -> None:
    ours = decode_properties_basic(buf, 0)
    theirs = amqp.serialization.decode_properties_basic(buf, 0)
    assert _typed(ours[0]) == _typed(theirs[0])
    assert ours[1] == theirs[1]


@pytest.mark.parametrize("tolerant", [False, True], ids=["py-amqp's text", "tolerant text"])
def test_random_properties_decode_alike(tolerant: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amqp.serialization, "pstr_t", amqp.serialization.pstr_t)
    monkeypatch.setattr(amqp.serialization, "datetime", amqp.serialization.datetime)
    if tolerant:
        amqp_tolerance.install()
    else:
        monkeypatch.setattr(amqp.serialization, "pstr_t", amqp.utils.bytes_to_str)
    rng = random.Random(14)
    for _ in range(2000):
        properties = _properties(rng)
        buf = amqp.Message(b"", **properties)._serialize_properties()
        _both(buf)
        if properties:
            assert decode_properties_basic(buf, 0)[0]  # not trivially empty on both sides


def _table(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack(">H", 0x2000) + struct.pack(">I", len(body)) + body


def test_what_py_amqp_cannot_decode_is_decoded_alike_tolerated_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(amqp.serialization, "pstr_t", amqp.serialization.pstr_t)
    monkeypatch.setattr(amqp.serialization, "datetime", amqp.serialization.datetime)
    bad_text = b"\x03k\xffy" + b"S" + struct.pack(">I", 2) + b"\xfe\xfd"
    surrogate = b"\x03\xed\xa0\x80" + b"S" + struct.pack(">I", 3) + b"\xed\xa0\x80"  # '\ud800'
    far_time = b"\x01t" + b"T" + struct.pack(">Q", 400_000_000_000)
    rabbit_int = b"\x01s" + b"s" + struct.pack(">h", -5)  # RabbitMQ's 16-bit letter
    nested = b"\x01a" + b"A" + struct.pack(">I", 6) + b"V" + b"I" + struct.pack(">i", -7)
    monkeypatch.setattr(amqp.serialization, "pstr_t", amqp.utils.bytes_to_str)
    for table in (_table(bad_text), _table(rabbit_int, nested, surrogate)):
        _both(table)  # py-amqp keeps undecodable text as bytes
    amqp_tolerance.install()
    for table in (_table(bad_text, surrogate), _table(rabbit_int, nested, far_time)):
        _both(table)
    headers = decode_properties_basic(_table(bad_text, far_time), 0)[0]["application_headers"]
    assert amqp_tolerance.undecodable(headers)
    # Keys are kept once read, but not one that is not UTF-8: told about each time.
    headers = decode_properties_basic(_table(bad_text, far_time), 0)[0]["application_headers"]
    assert amqp_tolerance.undecodable(headers)


def _nested(depth: int, kind: bytes) -> bytes:
    """A header table holding a table (or an array of tables) nested `depth` deep."""
    value = b"V"
    for _ in range(depth):
        inner = b"\x01a" + value if kind == b"F" else value
        value = kind + struct.pack(">I", len(inner)) + inner
    return _table(b"\x01n" + value)


@pytest.mark.parametrize("kind", [b"F", b"A"], ids=["tables", "arrays"])
def test_nesting_as_deep_as_py_amqp_reads_is_read_alike(kind: bytes) -> None:
    # As deep as py-amqp reads, and a worker took before: 500 levels (compared
    # whole: nothing but tables, arrays and nulls, so types cannot differ).
    deep = _nested(500, kind)
    assert decode_properties_basic(deep, 0) == amqp.serialization.decode_properties_basic(deep, 0)
    # Deeper than py-amqp can read: the same error, not another one.
    too_deep = _nested(5000, kind)
    with pytest.raises(RecursionError):
        amqp.serialization.decode_properties_basic(too_deep, 0)
    with pytest.raises(RecursionError):
        decode_properties_basic(too_deep, 0)


def test_properties_in_every_combination_leave_a_bounded_cache() -> None:
    # Flags a producer chose (RabbitMQ passes even the two reserved bits on):
    # the walk of each combination is kept for a few only.
    for flags in range(0x0003, 0x4000, 0x0041):
        buf = struct.pack(">H", flags | 0x8000) + b"\x04text" + b"\x00" * 64
        assert decode_properties_basic(buf, 0)[0]["content_type"] == "text"
    assert len(amqp_properties._present) <= amqp_properties._MAX_FLAGS
