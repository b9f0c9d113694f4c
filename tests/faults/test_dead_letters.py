"""`tidings dead-letters list|replay`: inspect the dead-letter queue and send letters back."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kombu import Connection, Producer

from harness.processes import base_env
from harness.producers import EventSource
from tidings.names import DEAD_QUEUE, REASON_HEADER, ROUTING_KEY_HEADER, TASK_HEADER

TIDINGS = str(Path(sys.executable).parent / "tidings")
TOPIC = "tidings.user.fault-dead"

pytestmark = pytest.mark.timeout(120)


def tidings(*args: str, broker_url: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [TIDINGS, "dead-letters", *args],
        env=base_env(TIDINGS_BROKER_URL=broker_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result
    return result


def dead_letter(broker_url: str, body: str, headers: dict[str, str]) -> None:
    """Put a letter in the dead-letter queue as the worker does."""
    from workers.queues import dead_queue

    with Connection(broker_url) as conn:
        channel = conn.channel()
        dead_queue(channel).declare()
        Producer(channel).publish(
            body,
            exchange="",
            routing_key=DEAD_QUEUE,
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            serializer=None,
        )


def test_list_then_replay_events_and_tasks(router, vhost, start_worker, subscribe):
    start_worker(router, vhost)
    counter = subscribe(router.ws_url, "fault-dead", [TOPIC])
    source = EventSource(vhost, TOPIC)
    try:
        # One the worker dead-letters itself...
        source.raw_body("{not json at all", "entity.updated")
        # ...and two that failed for a reason since gone (a router that refused).
        event_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
        event = {"event_id": event_id, "type": "publish", "topic": TOPIC, "payload": {"n": 1}}
        dead_letter(
            vhost,
            json.dumps(event),
            {REASON_HEADER: "router refused: for a while", ROUTING_KEY_HEADER: "publish"},
        )
        task = {"task": "tidings.publish", "id": task_id, "args": [TOPIC, {"n": 2}], "kwargs": {}}
        dead_letter(
            vhost,
            json.dumps(task),
            {REASON_HEADER: "router refused: for a while", TASK_HEADER: "tidings.publish"},
        )

        listing = {}
        for _ in range(50):  # until the worker has dead-lettered the first one
            listing = json.loads(tidings("list", "--json", broker_url=vhost).stdout)
            if listing["count"] == 3:
                break
        assert listing["count"] == 3, listing
        # In whatever order they reached the queue: the worker's comes when it comes.
        (first,) = [d for d in listing["first"] if "not JSON" in d["reason"]]
        second, third = [d for d in listing["first"] if d is not first]
        if second["task"] is not None:
            second, third = third, second
        assert first["routing_key"] == "entity.updated"
        assert first["excerpt"].startswith("{not json")
        assert second["routing_key"] == "publish" and second["task"] is None
        assert third["task"] == "tidings.publish" and third["routing_key"] is None
        text = tidings("list", broker_url=vhost).stdout
        assert "3 in tidings.events.dead" in text and "routing key entity.updated" in text
        # Listing leaves the queue as it was.
        assert json.loads(tidings("list", "--json", broker_url=vhost).stdout) == listing

        replayed = tidings("replay", "--match", "router refused", broker_url=vhost).stdout
        assert "replayed 1 events and 1 tasks; 1 left" in replayed
        counter.wait_all({event_id, task_id}, timeout=30)  # ids kept: duplicates stay detectable

        # Replaying the one that is still bad: the worker dead-letters it again, marked.
        assert "replayed 1 events and 0 tasks; 0 left" in tidings("replay", broker_url=vhost).stdout
        for _ in range(50):
            listing = json.loads(tidings("list", "--json", broker_url=vhost).stdout)
            if listing["count"] == 1:
                break
        (again,) = listing["first"]
        assert again["replays"] == 1 and "not JSON" in again["reason"]
        assert again["routing_key"] == "entity.updated"
    finally:
        source.close()


def test_a_task_replayed_twice_says_so_and_purge_drops_for_good(
    router, vhost, start_worker, subscribe
):
    # Before: a replayed task went back without headers, so its count stayed 0.
    start_worker(router, vhost)
    source = EventSource(vhost, TOPIC)
    try:
        source.send_task("tidings.publish", [TOPIC, ["not", "an", "object"]])

        def listed(count: int) -> list[dict]:
            for _ in range(100):
                listing = json.loads(tidings("list", "--json", broker_url=vhost).stdout)
                if listing["count"] == count:
                    return listing["first"]
            raise AssertionError(f"{count} letters expected: {listing}")

        assert listed(1)[0]["replays"] == 0
        for times in (1, 2):
            replayed = tidings("replay", broker_url=vhost).stdout
            assert "replayed 0 events and 1 tasks; 0 left" in replayed
            (letter,) = listed(1)  # the worker dead-letters it again, counted
            assert letter["task"] == "tidings.publish" and letter["replays"] == times, letter
        assert "dropped 1 dead letters" in tidings("purge", broker_url=vhost).stdout
        assert json.loads(tidings("list", "--json", broker_url=vhost).stdout)["count"] == 0
    finally:
        source.close()


def _bodies(broker_url: str, queue: str) -> list[str]:
    """What a queue holds, in order, taken out of it."""
    found = []
    with Connection(broker_url) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            body = message.body
            found.append(body.decode("utf-8", "replace") if isinstance(body, bytes) else body)
    return found


def _event_letter(n: int) -> tuple[str, dict[str, str]]:
    body = json.dumps({"type": "publish", "topic": TOPIC, "payload": {"n": n}})
    return body, {REASON_HEADER: f"router down {n}", ROUTING_KEY_HEADER: "publish"}


def _events_queue(broker_url: str) -> None:
    from workers.queues import events_queue

    with Connection(broker_url) as conn:
        events_queue(conn.channel()).declare()


def test_replay_with_a_limit_takes_the_oldest_and_keeps_the_order_of_the_rest(vhost):
    from workers import dead_letters

    _events_queue(vhost)
    for n in range(5):
        dead_letter(vhost, *_event_letter(n))
    done = dead_letters.replay(vhost, limit=2)
    assert (done.events, done.tasks, done.skipped, done.left) == (2, 0, 0, 3)
    assert [json.loads(b)["payload"]["n"] for b in _bodies(vhost, "tidings.events")] == [0, 1]
    assert [json.loads(b)["payload"]["n"] for b in _bodies(vhost, DEAD_QUEUE)] == [2, 3, 4]


def test_letters_that_say_not_where_they_came_from_stay_and_the_others_go(vhost):
    from workers import dead_letters

    _events_queue(vhost)
    dead_letter(vhost, "{}", {REASON_HEADER: "no origin"})  # neither routing key nor task
    dead_letter(vhost, "not json", {REASON_HEADER: "a task", TASK_HEADER: "tidings.publish"})
    dead_letter(vhost, "\u00e9 not json", {REASON_HEADER: "raw", ROUTING_KEY_HEADER: "publish"})
    dead_letter(vhost, *_event_letter(1))
    done = dead_letters.replay(vhost)
    # A raw body goes back as it is, JSON or not: the worker judges it again.
    assert (done.events, done.tasks, done.skipped, done.left) == (2, 0, 2, 2)
    assert _bodies(vhost, "tidings.events")[0] == "\u00e9 not json"
    assert _bodies(vhost, DEAD_QUEUE) == ["{}", "not json"]


def test_letters_arriving_during_a_replay_wait_for_the_next_one(vhost, monkeypatch):
    from workers import dead_letters

    _events_queue(vhost)
    for n in range(3):
        dead_letter(vhost, *_event_letter(n))
    publish = dead_letters.Producer.publish

    def publish_and_another_arrives(self, body, **kwargs):
        if kwargs.get("exchange") == "":  # the letter below, on its way in
            return publish(self, body, **kwargs)
        # As the worker dead-letters an event again while the replay runs.
        arrived.append(body)
        dead_letter(vhost, *_event_letter(99 + len(arrived)))
        return publish(self, body, **kwargs)

    arrived: list[str] = []
    monkeypatch.setattr(dead_letters.Producer, "publish", publish_and_another_arrives)
    done = dead_letters.replay(vhost)
    assert (done.events, done.left) == (3, 0)
    assert [json.loads(b)["payload"]["n"] for b in _bodies(vhost, DEAD_QUEUE)] == [100, 101, 102]
