"""A header table read by its shape is the table py-amqp reads, whatever in it changed."""

from __future__ import annotations

import random
import struct
import uuid
from typing import Any

import amqp
import amqp.serialization
import pytest

from tests.unit.test_amqp_properties import _typed
from workers import amqp_tolerance, header_shapes
from workers.amqp_properties import decode_properties_basic


@pytest.fixture(autouse=True)
def no_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(header_shapes, "_shapes", ())
    monkeypatch.setattr(header_shapes, "_misses", 0)


def _celery_headers(rng: random.Random) -> dict[str, Any]:
    task_id = str(uuid.UUID(int=rng.getrandbits(128)))
    return {
        "lang": "py",
        "task": "tidings.publish",
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": f"('orders', {{'n': {rng.randint(0, 10 ** rng.randint(0, 12))}}})",
        "kwargsrepr": "{}",
        "origin": "gen1@host",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }


def _encoded(headers: dict[str, Any]) -> bytes:
    properties = {"content_type": "application/json", "application_headers": headers}
    return amqp.Message(b"", **properties)._serialize_properties()


def _read_alike(buf: bytes) -> dict[str, Any]:
    ours, end = decode_properties_basic(buf, 0)
    theirs, their_end = amqp.serialization.decode_properties_basic(buf, 0)
    assert _typed(ours) == _typed(theirs)
    assert end == their_end
    return ours["application_headers"]


def _read_by_shape(buf: bytes) -> bool:
    offset = 2  # the flags; then the content type, if any, and the table's length
    if buf[0] & 0x80:
        offset += 1 + buf[offset]
    return header_shapes.read(buf, offset + 4, len(buf)) is not None


def test_tables_of_one_shape_with_other_texts_are_read_by_it_alike() -> None:
    rng = random.Random(3)
    _read_alike(_encoded(_celery_headers(rng)))
    for _ in range(500):
        buf = _encoded(_celery_headers(rng))
        assert _read_by_shape(buf)
        _read_alike(buf)


@pytest.mark.parametrize(
    ("change", "shaped"),
    [
        ({"retries": 1}, True),  # a value compared whole
        ({"ignore_result": True}, True),
        ({"eta": "2030-01-01T00:00:00"}, True),  # void before, text now
        ({"parent_id": "p", "group": "g"}, True),
        ({"extra": 1}, True),
        ({"timelimit": [None, 5]}, False),  # rarer values: never read by shape
        ({"stamps": {"a": "b"}}, False),
    ],
)
def test_any_other_change_is_read_alike(change: dict[str, Any], shaped: bool) -> None:
    rng = random.Random(4)
    _read_alike(_encoded(_celery_headers(rng)))
    headers = {**_celery_headers(rng), **change}
    assert not _read_by_shape(_encoded(headers))
    assert _read_alike(_encoded(headers)) == headers
    again = {**_celery_headers(rng), **change}
    assert _read_by_shape(_encoded(again)) == shaped  # its own shape, learned
    assert _read_alike(_encoded(again)) == again


def test_other_texts_of_any_length_are_read_by_the_same_shape() -> None:
    rng = random.Random(6)
    _read_alike(_encoded(_celery_headers(rng)))
    headers = {**_celery_headers(rng), "task": "tidings.notify", "origin": "é ☃ 𝄞" * 300}
    assert _read_by_shape(_encoded(headers))
    assert _read_alike(_encoded(headers)) == headers


def test_values_that_can_be_changed_are_made_anew_for_each_table() -> None:
    rng = random.Random(5)
    first = _read_alike(_encoded(_celery_headers(rng)))
    second = _read_alike(_encoded(_celery_headers(rng)))
    assert first["timelimit"] is not second["timelimit"]
    assert first["stamps"] is not second["stamps"]
    second["stamps"]["x"] = 1
    assert _read_alike(_encoded(_celery_headers(rng)))["stamps"] == {}


def _table_of(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack(">H", 0x2000) + struct.pack(">I", len(body)) + body


def _text(key: bytes, value: bytes) -> bytes:
    return bytes([len(key)]) + key + b"S" + struct.pack(">I", len(value)) + value


def test_text_that_is_not_utf8_in_a_shaped_table_is_decoded_tolerantly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(amqp.serialization, "pstr_t", amqp.serialization.pstr_t)
    monkeypatch.setattr(amqp.serialization, "datetime", amqp.serialization.datetime)
    amqp_tolerance.install()
    void = b"\x01vV"
    _read_alike(_table_of(_text(b"id", b"1"), void))
    assert _read_by_shape(_table_of(_text(b"id", b"2"), void))
    for value in (b"\xfe\xfd", b"\xed\xa0\x80"):  # not UTF-8; a lone surrogate
        buf = _table_of(_text(b"id", value), void)
        assert not _read_by_shape(buf)
        headers = _read_alike(buf)
        assert bool(amqp_tolerance.undecodable(headers)) == (value == b"\xfe\xfd")


def test_a_key_twice_or_a_table_past_its_end_is_read_alike() -> None:
    twice = _table_of(_text(b"k", b"1"), b"\x01vV", _text(b"k", b"2"))
    for _ in range(2):
        assert _read_alike(twice) == {"k": "2", "v": None}
    assert not _read_by_shape(twice)
    _read_alike(_table_of(_text(b"k", b"1"), b"\x01vV"))
    short = bytearray(_table_of(_text(b"k", b"12"), b"\x01vV"))
    short[2:6] = struct.pack(">I", len(short) - 6 - 3)  # the void is past the table's end
    _read_alike(bytes(short))


def test_a_producer_whose_every_table_differs_leaves_a_few_shapes() -> None:
    for n in range(200):
        keys = [f"k{n}-{i}".encode() for i in range(3)]
        _read_alike(_table_of(*(_text(key, b"v") for key in keys)))
    assert len(header_shapes._shapes) <= header_shapes.MAX_SHAPES


def test_a_table_that_ends_where_a_shape_goes_on_is_read_alike() -> None:
    # The bytes after the table (here a timestamp) spell how the shape goes on:
    # the shape must stop at the table's end, as py-amqp does, not read on.
    rng = random.Random(7)
    _read_alike(_encoded(_celery_headers(rng)))
    timestamp = int.from_bytes(b"\x04taskS\x00\x00", "big")
    buf = amqp.Message(
        b"",
        content_type="application/json",
        application_headers={"lang": "py"},
        timestamp=timestamp,
    )._serialize_properties()
    assert _read_alike(buf) == {"lang": "py"}


def test_shapes_differing_in_their_last_entry_are_told_apart_by_it() -> None:
    rng = random.Random(8)
    layouts = [{**_celery_headers(rng), "stamped_headers": None, "n": n} for n in range(6)]
    for round_ in range(3):
        for layout in layouts:
            headers = {**layout, "id": f"{round_}-{layout['n']}"}
            assert _read_alike(_encoded(headers)) == headers
    assert len(header_shapes._shapes) <= header_shapes.MAX_SHAPES


def test_tables_too_large_or_known_already_are_not_learned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(amqp.serialization, "pstr_t", amqp.serialization.pstr_t)
    amqp_tolerance.install()
    large = {f"k{i}": None for i in range(header_shapes.MAX_SHAPE_BYTES // 4)}
    _read_alike(_encoded(large))
    assert not header_shapes._shapes
    # A lone surrogate misses the shape of its table (the tolerant decoder reads it):
    # that shape is not kept again.
    _read_alike(_table_of(_text(b"id", b"1")))
    for _ in range(3):
        _read_alike(_table_of(_text(b"id", b"\xed\xa0\x80")))
    assert len(header_shapes._shapes) == 1
