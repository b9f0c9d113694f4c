"""The stores on a Redis of the test's own: history streams, presence over nodes, maintenance."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from harness.redis_server import redis_server
from stores.history import RedisHistory
from stores.maintenance import REDIS_KEY as MAINTENANCE_KEY
from stores.maintenance import STATE_FILE as MAINTENANCE_FILE
from stores.maintenance import make_store as make_maintenance_store
from stores.presence import RedisPresence
from tidings.errors import HistoryGap

TOPIC = "tidings.entity.order.42"


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


def event(n: int) -> tuple[str, str, str]:
    return TOPIC, f"e{n}", json.dumps({"event_id": f"e{n}", "n": n})


def test_events_get_increasing_positions_once_each(redis_url):
    history = RedisHistory(redis_url, size=5)
    positions = history.record([event(n) for n in range(3)])
    epoch = positions[0].split(":")[0]
    assert positions == [f"{epoch}:1", f"{epoch}:2", f"{epoch}:3"]
    # A redelivered event keeps its place; nothing is added.
    assert history.record([event(1), event(3)]) == [f"{epoch}:2", f"{epoch}:4"]
    assert [e["n"] for e in history.since(TOPIC, None, 48_000)] == [0, 1, 2, 3]


def test_since_by_event_id_or_by_position(redis_url):
    history = RedisHistory(redis_url, size=10)
    positions = history.record([event(n) for n in range(4)])
    after_one = history.since(TOPIC, "e1", 48_000)
    assert [e["n"] for e in after_one] == [2, 3]
    assert [e["position"] for e in after_one] == positions[2:]
    assert [e["n"] for e in history.since(TOPIC, positions[2], 48_000)] == [3]
    assert history.since(TOPIC, "e3", 48_000) == []


def test_a_gap_only_when_events_may_have_been_missed(redis_url):
    history = RedisHistory(redis_url, size=3)
    positions = history.record([event(n) for n in range(6)])  # keeps 3, 4, 5
    assert [e["n"] for e in history.since(TOPIC, "e2", 48_000)] == [3, 4, 5]  # nothing missed
    with pytest.raises(HistoryGap):
        history.since(TOPIC, "e1", 48_000)  # e2 was missed and is gone
    with pytest.raises(HistoryGap):
        history.since(TOPIC, positions[0], 48_000)
    # The stream expired and was made anew: an old position is a gap, not a wrong answer.
    redis.Redis.from_url(redis_url).flushall()
    history.record([event(9)])
    with pytest.raises(HistoryGap):
        history.since(TOPIC, positions[-1], 48_000)
    with pytest.raises(HistoryGap):
        history.since("tidings.user.1", "e1", 48_000)
    assert history.since("tidings.user.1", None, 48_000) == []


def test_answers_stop_before_the_byte_bound(redis_url):
    history = RedisHistory(redis_url, size=500)
    big = "x" * 1000
    history.record(
        [(TOPIC, f"b{n}", json.dumps({"event_id": f"b{n}", "x": big})) for n in range(300)]
    )
    first = history.since(TOPIC, None, 48_000)
    assert 40 <= len(first) <= 48
    rest = history.since(TOPIC, first[-1]["event_id"], 48_000)
    assert rest[0]["event_id"] == f"b{len(first)}"


def test_presence_spans_nodes_and_counts_a_user_once(redis_url):
    a, b = RedisPresence(redis_url, "a"), RedisPresence(redis_url, "b")
    assert a.start() == [] and b.start() == []
    assert a.join(1, 10, TOPIC, "alice")  # first: joined
    assert not b.join(7, 70, TOPIC, "alice")  # her second tab, on another node
    assert b.join(8, 80, TOPIC, "bob")
    assert a.editors(TOPIC) == b.editors(TOPIC) == ["alice", "bob"]
    assert a.leave(1, 10) is None  # still there through node b
    assert b.drop_session(7) == [(TOPIC, "alice")]
    assert a.editors(TOPIC) == ["bob"]


def test_a_dead_node_s_users_leave_and_a_restart_forgets_the_old_sessions(redis_url):
    a = RedisPresence(redis_url, "a", dead_after=1)
    b = RedisPresence(redis_url, "b", dead_after=1)
    a.start()
    b.start()
    a.join(1, 10, TOPIC, "alice")
    b.join(2, 20, TOPIC, "bob")
    assert b.reap() == []  # a is alive
    deadline = time.monotonic() + 5
    gone: list[tuple[str, str]] = []
    while not gone:  # a stops beating; b keeps beating and takes a's entries away
        assert time.monotonic() < deadline
        b.beat()
        gone = b.reap()
        time.sleep(0.2)
    assert gone == [(TOPIC, "alice")] and b.editors(TOPIC) == ["bob"]
    assert b.reap() == []  # once
    # b restarts: what it held before is gone at once.
    again = RedisPresence(redis_url, "b")
    assert again.start() == [(TOPIC, "bob")]
    assert again.editors(TOPIC) == []


def test_announcements_reach_every_node(redis_url):
    a, b = RedisPresence(redis_url, "a"), RedisPresence(redis_url, "b")
    heard: list[tuple[str, str, str]] = []
    stop = threading.Event()
    listener = threading.Thread(target=b.listen, args=(lambda *m: heard.append(m), stop))
    listener.start()
    try:
        deadline = time.monotonic() + 5
        while not heard:
            assert time.monotonic() < deadline, "nothing heard"
            a.announce(TOPIC, "alice", "joined")
            time.sleep(0.1)
        assert heard[0] == (TOPIC, "alice", "joined")
    finally:
        stop.set()
        listener.join(5)


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_the_maintenance_store_keeps_a_state_and_ignores_a_broken_one(kind, redis_url, tmp_path):
    store = make_maintenance_store(tmp_path, redis_url if kind == "redis" else None)
    assert store.load() is None  # never switched on
    on = {"enabled": True, "message": "back soon", "by": "1", "at": "2026-01-01T00:00:00Z"}
    store.save(on)
    assert store.load() == on
    off = {**on, "enabled": False}
    store.save(off)
    assert make_maintenance_store(tmp_path, redis_url if kind == "redis" else None).load() == off
    for broken in ('{"enabled": tru', '{"enabled": "yes"}', "[]"):
        if kind == "redis":
            redis.Redis.from_url(redis_url).set(MAINTENANCE_KEY, broken)
        else:
            (tmp_path / MAINTENANCE_FILE).write_text(broken)
        assert store.load() is None, broken
    if kind == "file":  # replaced atomically: nothing left beside it
        store.save(on)
        assert [p.name for p in tmp_path.iterdir()] == [MAINTENANCE_FILE]
