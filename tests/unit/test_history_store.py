"""The bookkeeping behind history and presence, on its own: bounds, order, gaps, tabs."""

from __future__ import annotations

import gc
import json
import tracemalloc

import msgpack
import pytest

from harness.processes import ROOT
from tests.support.measurements import record
from tidings import events
from tidings.errors import HistoryGap
from tidings.history_book import EventHistory
from tidings.presence_book import PresenceBook


def entity_event(record_id: int, n: int | None = None) -> dict:
    """An entity event as the workers build it; a UUID event id unless `n` is given."""
    (out, *_) = events.entity_changed(
        "order",
        record_id,
        changed_by=7,
        fields=["status", "total"],
        event_id=None if n is None else f"e-{n:06d}",
    )
    return out.payload


def test_since_returns_the_events_after_one_oldest_first_or_a_gap():
    history = EventHistory(size=5)
    topic = "tidings.entity.order.1"
    for n in range(8):
        history.add(topic, entity_event(1, n))
    assert [e["event_id"] for e in history.since(topic, "e-000004")] == [
        "e-000005",
        "e-000006",
        "e-000007",
    ]
    assert history.since(topic, "e-000007") == []
    with pytest.raises(HistoryGap):
        history.since(topic, "e-000002")  # fell out of the window of 5
    with pytest.raises(HistoryGap):
        history.since("tidings.entity.order.2", "e-000007")  # never held
    assert len(history.since(topic, None)) == 5


def test_a_redelivered_event_is_held_once():
    history = EventHistory(size=5)
    topic = "tidings.user.7"
    assert history.add(topic, {"event_id": "a", "n": 1})
    assert not history.add(topic, {"event_id": "a", "n": 1})
    assert not history.add(topic, {"n": 2})  # no id: a client could not ask after it
    assert [e["n"] for e in history.since(topic, None)] == [1]


def _browser_message_limit() -> int:
    config = json.loads((ROOT / ".crossbar" / "config.json").read_text())
    (web,) = [t for t in config["workers"][0]["transports"] if t["type"] == "web"]
    return int(web["paths"]["ws"]["options"]["max_message_size"])


def _result_bytes(answer: list[dict]) -> int:
    """The WAMP RESULT a browser gets for `answer`, as JSON (the largest of its serializers)."""
    return len(json.dumps([50, 2**53, {}, [answer]], separators=(",", ":")).encode())


def test_answers_stay_below_the_browser_message_limit():
    limit = _browser_message_limit()
    history = EventHistory(size=100)
    topic = "tidings.user.7"
    for n in range(100):
        history.add(topic, {"event_id": f"e{n}", "text": "x" * 2000})
    first = history.since(topic, "e0")
    assert 5 < len(first) < 99 and _result_bytes(first) < limit
    rest = []
    while len(first) + len(rest) < 99:  # asked again from the last one, as a client does
        more = history.since(topic, (rest or first)[-1]["event_id"])
        assert more and _result_bytes(more) < limit
        rest += more
    assert [e["event_id"] for e in first + rest] == [f"e{n}" for n in range(1, 100)]
    # The largest event a producer may send comes alone, and still fits.
    history.add(topic, {"event_id": "big", "text": "y" * (events.MAX_EVENT_BYTES - 100)})
    history.add(topic, {"event_id": "after", "text": "z"})
    (big,) = history.since(topic, "e99")
    assert big["event_id"] == "big" and _result_bytes([big]) < limit


def test_topics_and_bytes_are_bounded_least_recently_used_first():
    history = EventHistory(size=10, max_topics=3)
    for record_id in (1, 2, 3):
        history.add(f"tidings.entity.order.{record_id}", entity_event(record_id, record_id))
    history.add("tidings.entity.order.1", entity_event(1, 10))  # 1 is fresh again
    history.add("tidings.entity.order.4", entity_event(4, 11))
    assert len(history) == 3
    with pytest.raises(HistoryGap):
        history.since("tidings.entity.order.2", "e-000002")
    assert history.since("tidings.entity.order.1", "e-000001")

    small = EventHistory(size=100, max_bytes=20_000)
    for n in range(1000):
        small.add(f"tidings.entity.order.{n % 50}", entity_event(n % 50, n))
    assert small.bytes <= 20_000


def test_bytes_per_held_event_are_measured_and_accounted():
    """What the README states: the real cost of a held entity event, and that the
    byte budget counts it within 15%."""
    size, records = 100, 200
    raw = [
        (f"tidings.entity.order.{n % records}", msgpack.packb(entity_event(n % records)))
        for n in range(size * records)
    ]
    history = EventHistory(size=size, max_topics=records, max_bytes=1 << 40)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for topic, body in raw:
            # As the router hands events over: freshly decoded objects.
            history.add(msgpack.unpackb(msgpack.packb(topic)), msgpack.unpackb(body))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_event = used / history.held()
    json_size = len(json.dumps(entity_event(1), separators=(",", ":")))
    record("history_bytes_per_event", round(per_event), json_bytes=json_size)
    assert history.held() == size * records
    assert abs(history.bytes / history.held() - per_event) < 0.15 * per_event
    assert per_event < 2.5 * json_size


def test_a_user_with_several_tabs_is_on_a_record_once():
    book = PresenceBook()
    topic = "tidings.entity.order.1"
    assert book.join(session=1, subscription=10, topic=topic, user="7")
    assert not book.join(session=2, subscription=10, topic=topic, user="7")  # second tab
    assert book.join(session=3, subscription=10, topic=topic, user="8")
    assert book.editors(topic) == ["7", "8"]
    assert book.leave(1, 10) is None  # the other tab is still there
    assert book.drop_session(2) == [(topic, "7")]
    assert book.leave(2, 10) is None  # the router's on_unsubscribe after on_leave: no-op
    assert book.leave(3, 10) == (topic, "8")
    assert book.editors(topic) == [] and len(book) == 0
