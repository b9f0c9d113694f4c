"""Domain events checked and planned: timestamps, ids, and what a producer may not ask for."""

from __future__ import annotations

import json
import math
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidings import catalogue, events
from tidings.errors import InvalidEvent


def test_at_is_kept_in_utc_so_that_it_compares_as_a_time_and_as_text():
    noon_in_paris = events.entity_changed("order", 1, at="2026-11-28T12:00:00+02:00")[0]
    later_in_london = events.entity_changed("order", 1, at="2026-11-28T10:30:00Z")[0]
    assert noon_in_paris.payload["at"] == "2026-11-28T10:00:00.000Z"
    assert later_in_london.payload["at"] == "2026-11-28T10:30:00.000Z"
    assert noon_in_paris.payload["at"] < later_in_london.payload["at"]
    # Without an offset it is taken as UTC; none at all is now.
    assert events.maintenance(True, at="2026-11-28T10:00:00").payload["at"].endswith(":00.000Z")
    assert events.maintenance(True).payload["at"].endswith("Z")


def test_now_is_written_as_a_given_timestamp_is_and_tells_the_time():
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    stamped = events.now_iso()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamped)
    assert events._timestamp(stamped) == stamped
    assert before <= datetime.fromisoformat(stamped.replace("Z", "+00:00")) <= after


def test_the_size_limit_counts_bytes_not_characters():
    limit = events.MAX_EVENT_BYTES
    events.publish("tidings.user.1", {"t": "a" * (limit - 100)})
    with pytest.raises(InvalidEvent, match="bytes; the limit"):
        events.publish("tidings.user.1", {"t": "é" * (limit // 2)})  # 2 bytes each
    with pytest.raises(InvalidEvent, match="not valid Unicode"):
        events.publish("tidings.user.1", {"t": "\ud800"})  # a lone surrogate


def test_every_publish_carries_event_id_and_at():
    out = events.publish("tidings.user.1", {"text": "hi"}, event_id="e-1")
    assert out.payload == {"text": "hi", "event_id": "e-1", "at": out.payload["at"]}
    assert out.payload["at"].endswith("Z")
    with pytest.raises(InvalidEvent, match="ISO-8601"):
        events.publish("tidings.user.1", {"at": "yesterday"})


def test_an_event_without_id_gets_one_derived_from_its_message():
    body = b'{"type": "entity.updated", "entity": "order", "id": 1}'
    first = events.derived_event_id(body)
    assert first == events.derived_event_id(body)  # a redelivered copy: the same id
    assert first != events.derived_event_id(body + b" ")
    assert events.derived_event_id(body, message_id="m-42") == "m-42"
    (out,) = events.plan(events.decode(body), first)
    assert out.payload["event_id"] == first


def test_retain_cannot_go_with_a_list_of_users():
    for option in ("eligible_authids", "exclude_authids"):
        with pytest.raises(InvalidEvent, match="retain cannot go with"):
            events.publish("tidings.maintenance", {"enabled": True}, retain=True, **{option: ["1"]})
    assert events.publish("tidings.maintenance", {"enabled": True}, retain=True).options


def test_lists_of_users_are_bounded():
    many = [str(n) for n in range(events.MAX_AUTHIDS + 1)]
    with pytest.raises(InvalidEvent, match="at most 1000"):
        events.publish("tidings.user.1", {}, eligible_authids=many)
    with pytest.raises(InvalidEvent, match="list of user ids"):
        events.publish("tidings.user.1", {}, exclude_authids=["x" * 65])


@pytest.mark.parametrize("uri", ["tidings.user.7\n", "tidings.user.7 ", "tidings.entity.order.1\n"])
def test_a_topic_matches_whole_or_not_at_all(uri):
    assert catalogue.lookup(uri) is None
    with pytest.raises(InvalidEvent, match="not in the catalogue"):
        events.publish(uri, {})


def _flat_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            "text",
            "\x01" * rng.randint(0, 12_000),  # six bytes each in JSON
            "é",
            "\ud800",
            rng.randint(-(10**18) + 1, 10**18 - 1),
            rng.choice([10**18, -(10**18), 2**64]),
            rng.uniform(-1e300, 1e300),
            rng.choice([math.nan, math.inf, -math.inf]),
            rng.random() < 0.5,
            None,
            [1],
            {"a": 1},
        ]
    )


def test_a_payload_passed_without_encoding_would_pass_encoded():
    rng = random.Random(14)
    passed = 0
    for _ in range(3000):
        payload = {
            rng.choice(["k", "ключ", "x" * 300]): _flat_value(rng) for _ in range(rng.randint(1, 4))
        }
        if rng.random() < 0.1:
            payload[1] = "an integer key"  # type: ignore[index]
        if events._plainly_small(payload):
            passed += 1
            events._check_encoded(payload)  # raises if the shortcut let a bad one through
    assert passed > 300
    assert events._plainly_small({"t": "\x01" * 10_233})
    events._check_encoded({"t": "\x01" * 10_233})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "NaN"),
        (2**64, "64 bits"),
        ("\ud800", "not valid Unicode"),
        ("\x01" * 10_300, "bytes; the limit"),
    ],
)
def test_a_plain_looking_payload_is_still_refused_for_what_it_holds(value: Any, reason: str):
    with pytest.raises(InvalidEvent, match=reason):
        events.publish("tidings.user.1", {"v": value})


# Bodies where JSON readers are known to differ: numbers past a float or a 64-bit
# integer, NaN and Infinity (the standard library's extension), lone surrogates,
# byte order marks, UTF-16, nesting deeper than a stack, and plain invalid JSON.
_ODD_BODIES: list[bytes | str] = [
    '{"n": 18446744073709551616, "m": -9223372036854775809}',
    '{"big": 123456789012345678901234567890}',
    '{"f": 1' + "0" * 400 + ".0}",
    '{"f": 1e400, "g": -1e400, "h": 123.456e-789}',
    '{"x": NaN, "y": Infinity, "z": -Infinity}',
    '{"s": "\\ud800"}',
    '{"s": "\\ude00\\ud83d", "t": "\\ud83d\\ude00"}',
    '{"s": "\ud800"}',
    b'\xef\xbb\xbf{"a": 1}',
    "\ufeff{}",
    '{"a": 1}'.encode("utf-16"),
    b'{"a": "\xff"}',
    '{"a": ' * 5000 + "1" + "}" * 5000,
    '{"d": ' + "9" * 5000 + "}",
    '{"a": 1, "a": 2}',
    '{"a": 1,}',
    '{"a": 01}',
    '{"a": "\t"}',
    '{"a": "\x7f"}',
    "[1, 2]",
    '"text"',
    "",
    '{"a": 1} x',
]


def _reading(body: bytes | str) -> Any:
    try:
        value = events.decode(body)
    except InvalidEvent as exc:
        return ("refused", str(exc))
    return ("value", value)


def _stdlib_reading(body: bytes | str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What `decode` gave before msgspec read first: the standard library's reading."""

    def unread(body: bytes | str) -> Any:
        raise ValueError("left to the standard library")

    with monkeypatch.context() as patched:
        patched.setattr(events, "quick_json", unread)
        return _reading(body)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30])
    if kind == 2:
        return rng.choice([0.1, -0.0, 1e-320, 1.7976931348623157e308, 5e-324, rng.random()])
    if kind in (3, 4):
        alphabet = 'aé\u00ff\u2028\U0001f600"\\/\b\f\n\r\t\x00\x1f'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(_random_json(rng, 4)): _random_json(rng, depth + 1) for _ in range(4)}


@pytest.mark.parametrize("body", _ODD_BODIES, ids=range(len(_ODD_BODIES)))
def test_a_body_is_read_as_the_standard_library_reads_it(
    body: bytes | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # msgspec reads first; where it would read otherwise, the standard library does.
    # The comparison is on repr: NaN is not equal to itself, and -0.0 is equal to 0.0.
    assert repr(_reading(body)) == repr(_stdlib_reading(body, monkeypatch))


def test_random_json_is_read_as_the_standard_library_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(1403)
    for _ in range(2000):
        document = {"type": "publish", "v": _random_json(rng)}
        text = json.dumps(document, ensure_ascii=rng.random() < 0.5)
        for body in (text, text.encode()):
            assert repr(_reading(body)) == repr(_stdlib_reading(body, monkeypatch))
    # The quick reader is really used: it takes what the standard library takes.
    assert events.quick_json(b'{"type": "publish"}') == {"type": "publish"}


def test_floats_are_read_by_float_as_the_standard_library_reads_them() -> None:
    # msgspec's own reading of a number written with an exponent of 289 or more
    # takes 13 µs, twenty times the standard library's: a cheap way to stall a worker.
    assert events.quick_json.__self__.float_hook is float  # type: ignore[attr-defined]
    assert events.decode('{"f": [1e308, 0.001e293, 1e-320, 1.5]}') == {
        "f": [1e308, 1e290, 1e-320, 1.5]
    }
