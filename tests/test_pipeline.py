"""The pipeline end to end: Celery task or raw event → worker → Crossbar → subscriber."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from kombu import Connection, Queue

from harness.clients import Subscriber
from harness.producers import EventSource, app_client, post_raw


def test_task_from_plain_celery_client_reaches_subscriber(router, worker, broker_url):
    sub = Subscriber(router.ws_url, "7", ["tidings.user.7"]).start()
    try:
        client = app_client(broker_url)
        sent = client.send_task(
            "tidings.publish", ["tidings.user.7", {"text": "hello"}], {}, queue="tidings"
        )
        (event,) = sub.wait_count(1)
        assert event["text"] == "hello"
        # The task id, stamped by the worker: a redelivered copy carries the same one.
        assert event["event_id"] == sent.id
    finally:
        sub.close()


def test_raw_event_reaches_subscriber(router, worker, broker_url):
    perms = ["entity:order:view"]
    sub = Subscriber(router.ws_url, "8", ["tidings.entity.order.42"], perms).start()
    try:
        event_id = str(uuid.uuid4())
        post_raw(
            broker_url,
            {
                "event_id": event_id,
                "type": "entity.updated",
                "entity": "order",
                "id": 42,
                "changed_by": 7,
                "fields": ["status"],
                "at": "2026-11-28T10:00:00Z",
            },
        )
        (event,) = sub.wait_count(1)
        assert event == {
            "event_id": event_id,
            "action": "updated",
            "entity": "order",
            "id": 42,
            "changed_by": 7,
            "fields": ["status"],
            "at": "2026-11-28T10:00:00.000Z",  # in UTC, to the millisecond
        }
    finally:
        sub.close()


def test_raw_event_without_id_gets_one(router, worker, broker_url):
    sub = Subscriber(router.ws_url, "9", ["tidings.user.9"]).start()
    try:
        post_raw(
            broker_url,
            {"type": "publish", "topic": "tidings.user.9", "payload": {"n": 1}},
            routing_key="publish",
        )
        (event,) = sub.wait_count(1)
        assert event["n"] == 1
        uuid.UUID(event["event_id"])
        # Sent again (a producer's resend, a redelivery): the same id, so browsers drop it.
        post_raw(
            broker_url,
            {"type": "publish", "topic": "tidings.user.9", "payload": {"n": 1}},
            routing_key="publish",
        )
        first, again = sub.wait_count(2)
        assert again["event_id"] == first["event_id"]
    finally:
        sub.close()


def read_dead(broker_url: str, marker: str, timeout: float = 10) -> dict:
    """The dead-lettered message whose body contains `marker`, with its headers.

    Messages passed over stay unacked until the channel closes, which puts them
    back: requeueing one by one would hand the same message back every time.
    """
    deadline = time.monotonic() + timeout
    with Connection(broker_url) as conn:
        queue = Queue("tidings.events.dead", durable=True)(conn.channel())
        while time.monotonic() < deadline:
            message = queue.get(no_ack=False)
            if message is None:
                time.sleep(0.1)
                continue
            body = message.body
            body = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            if marker in body:
                message.ack()
                return {"body": body, "headers": message.headers}
    raise AssertionError(f"no dead-lettered message containing {marker!r}")


def test_malformed_events_are_dead_lettered_and_the_next_one_arrives(router, worker, broker_url):
    sub = Subscriber(router.ws_url, "10", ["tidings.user.10"]).start()
    try:
        cases = {
            "not-json": (b"{not json", "not JSON"),
            "wrong-schema": ({"type": "entity.updated", "entity": "order", "id": [1]}, "id must"),
            "unknown-type": ({"type": "rocket.launched"}, "unknown event type"),
            "unknown-topic": (
                {"type": "publish", "topic": "other.topic", "payload": {}},
                "not in the catalogue",
            ),
        }
        for name, (body, _) in cases.items():
            marker = f"marker-{name}-{uuid.uuid4()}"
            body = body + marker.encode() if isinstance(body, bytes) else {**body, "note": marker}
            cases[name] = (body, cases[name][1], marker)
            post_raw(broker_url, body)
        post_raw(
            broker_url,
            {"type": "publish", "topic": "tidings.user.10", "payload": {"after": "poison"}},
            routing_key="publish",
        )
        (event,) = sub.wait_count(1)
        assert event["after"] == "poison"
        for name, (_, reason, marker) in cases.items():
            dead = read_dead(broker_url, marker)
            assert reason in dead["headers"]["x-tidings-reason"], name
        assert worker.alive()
    finally:
        sub.close()


def test_invalid_task_is_dead_lettered_and_the_next_one_arrives(router, worker, broker_url):
    sub = Subscriber(router.ws_url, "11", ["tidings.user.11"]).start()
    try:
        client = app_client(broker_url)
        marker = f"marker-task-{uuid.uuid4()}"
        client.send_task("tidings.publish", ["elsewhere." + marker, {}], queue="tidings")
        client.send_task("tidings.publish", ["tidings.user.11", "not an object"], queue="tidings")
        client.send_task("tidings.publish", ["tidings.user.11", {"ok": True}], queue="tidings")
        (event,) = sub.wait_count(1)
        assert event["ok"] is True
        dead = read_dead(broker_url, marker)
        assert "not in the catalogue" in dead["headers"]["x-tidings-reason"]
        assert dead["headers"]["x-tidings-task"] == "tidings.publish"
        dead = read_dead(broker_url, "not an object")
        assert "payload must be a JSON object" in dead["headers"]["x-tidings-reason"]
    finally:
        sub.close()


def test_tasks_the_consumer_leaves_to_the_pool_arrive_and_misfits_are_dead_lettered(
    router, worker, broker_url
):
    # The consumer publishes plain tasks itself (workers.inline); one with a
    # countdown, or with a callback, goes through Celery's pool instead.
    sub = Subscriber(router.ws_url, "12", ["tidings.user.12"]).start()
    try:
        client = app_client(broker_url)
        marker = f"marker-args-{uuid.uuid4()}"
        topic = "tidings.user.12"

        def send(args: list, kwargs: dict | None = None, **options) -> str:
            result = client.send_task("tidings.publish", args, kwargs, queue="tidings", **options)
            return str(result.id)

        send([topic, {"m": marker}, None, None, False, "one too many"])
        send([topic, {"m": "bad-" + marker}], {"exclude_authids": 5})
        sent_at = datetime.now(UTC)
        later = send([topic, {"n": "later"}], countdown=2)
        linked = client.signature(
            "tidings.publish", [topic, {"n": "linked"}], immutable=True, queue="tidings"
        )
        first = send([topic, {"n": "first"}], link=linked)
        inline = send([topic, {"n": "inline"}])
        received = {e["n"]: e for e in sub.wait_count(4, timeout=20)}
        assert sorted(received) == ["first", "inline", "later", "linked"]
        # The countdown is kept: planned (stamped) no earlier than two seconds on.
        planned = datetime.fromisoformat(received["later"]["at"].replace("Z", "+00:00"))
        assert (planned - sent_at).total_seconds() >= 1.9, (planned, sent_at)
        # Which path each took: Celery's pool logs a task it runs; the consumer does not.
        pool = "".join(worker.log.lines)
        assert f"Task tidings.publish[{later}] received" in pool
        assert f"Task tidings.publish[{first}] received" in pool
        assert f"Task tidings.publish[{inline}] received" not in pool
        dead = read_dead(broker_url, "bad-" + marker)
        assert "exclude_authids must be a list of user ids" in dead["headers"]["x-tidings-reason"]
        dead = read_dead(broker_url, marker)
        reason = dead["headers"]["x-tidings-reason"]
        assert "arguments do not fit tidings.publish(topic, payload, " in reason
        assert worker.alive()
    finally:
        sub.close()


def test_events_of_one_topic_arrive_in_the_order_sent(router, worker, broker_url):
    # Through one worker process and nothing failing: raw events in queue order,
    # tasks too (each kind on its own queue, so two topics here, interleaved).
    topics = ["tidings.user.31", "tidings.user.32"]
    sub = Subscriber(router.ws_url, "31", topics[:1]).start()
    other = Subscriber(router.ws_url, "32", topics[1:]).start()
    source_raw = EventSource(broker_url, topics[0])
    source_tasks = EventSource(broker_url, topics[1])
    try:
        for seq in range(300):
            source_raw.raw(seq)
            if seq % 3 == 0:
                source_tasks.task(seq // 3)
        raw = [e["seq"] for e in sub.wait_count(300, timeout=60)]
        tasks = [e["seq"] for e in other.wait_count(100, timeout=60)]
        assert raw == list(range(300))
        assert tasks == list(range(100))
    finally:
        source_raw.close()
        source_tasks.close()
        sub.close()
        other.close()
