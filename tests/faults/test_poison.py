"""Fault 4: poison messages mixed into a valid stream.

Every bad message lands in `tidings.events.dead` with the reason in
`x-tidings-reason`, every good one arrives, and the worker neither crashes
nor stalls (nothing is left unacked).
"""

from __future__ import annotations

import bz2
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from kombu import Connection, Producer

from harness import rabbit
from harness.producers import EventSource
from publisher import Publisher, PublishError
from tidings.names import DEAD_QUEUE, REASON_HEADER
from tidings.settings import Settings

TOPIC = "tidings.user.fault-poison"
GOOD = 1200
ROUNDS = 3  # each kind of poison is sent this many times, spread over the stream

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not rabbit.available(), reason="needs rabbitmqctl"),
]


def _publish(marker: str, **fields: Any) -> str:
    return json.dumps({"type": "publish", "topic": TOPIC, "note": marker, **fields})


def _entity(marker: str, **fields: Any) -> str:
    return json.dumps(
        {"type": "entity.updated", "entity": "order", "id": 1, "note": marker, **fields}
    )


# kind: (make the raw body from a marker, routing key, what the reason says)
RAW: dict[str, tuple[Callable[[str], bytes | str], str, str]] = {
    "not-json": (lambda m: f"{{not json {m}".encode(), "entity.updated", "not JSON"),
    "not-utf8": (lambda m: b"\xff\xfe" + m.encode(), "entity.updated", "not JSON"),
    "array": (lambda m: json.dumps([m]), "entity.updated", "must be a JSON object"),
    "id-list": (lambda m: _entity(m, id=[1]), "entity.updated", "id must"),
    "fields-str": (lambda m: _entity(m, fields="status"), "entity.updated", "fields must"),
    "changed-by-bool": (lambda m: _entity(m, changed_by=True), "entity.updated", "changed_by"),
    "bad-at": (lambda m: _entity(m, at="yesterday"), "entity.updated", "ISO-8601"),
    "event-id-int": (lambda m: _entity(m, event_id=5), "entity.updated", "event_id must"),
    "payload-str": (lambda m: _publish(m, payload="text"), "publish", "must be a JSON object"),
    "unknown-type": (lambda m: json.dumps({"type": "rocket", "note": m}), "rocket", "unknown"),
    "foreign-topic": (
        lambda m: _publish(m, topic="other.topic", payload={}),
        "publish",
        "not in the catalogue",
    ),
    "topic-too-deep": (
        lambda m: _publish(m, topic="tidings.user.1.2", payload={}),
        "publish",
        "not in the catalogue",
    ),
    "huge-body": (lambda m: _publish(m, payload={"x": "a" * 200_000}), "publish", "bytes"),
    "huge-payload": (
        lambda m: _publish(m, payload={f"k{i}": "b" * 50 for i in range(1200)}),
        "publish",
        "bytes",
    ),
    "nan": (
        lambda m: _publish(m, payload={"x": "NAN"}).replace('"NAN"', "NaN"),
        "publish",
        "NaN",
    ),
    "huge-int": (lambda m: _publish(m, payload={"x": 2**70}), "publish", "64 bits"),
    "lone-surrogate": (lambda m: _publish(m, payload={"x": "\ud800"}), "publish", "Unicode"),
    "deep-nesting": (
        lambda m: _publish(m, payload={"x": "DEEP"}).replace('"DEEP"', "[" * 5000 + "]" * 5000),
        "publish",
        "nested",
    ),
    "nested-200": (
        lambda m: _publish(m, payload={"x": "DEEP"}).replace('"DEEP"', "[" * 200 + "]" * 200),
        "publish",
        "nested",
    ),
}

# kind: (task name, args, what the reason says); the marker goes into the args
TASKS: dict[str, tuple[str, Callable[[str], list[Any]], str]] = {
    "task-foreign-topic": ("tidings.publish", lambda m: ["other.topic", {"m": m}], "catalogue"),
    "task-payload-list": ("tidings.publish", lambda m: [TOPIC, [m]], "must be a JSON object"),
    "task-id-dict": (
        "tidings.entity_changed",
        lambda m: ["order", {"m": m}],
        "id must",
    ),
    "task-enabled-str": ("tidings.maintenance", lambda m: ["yes", m], "enabled must"),
    # Crossbar would hand a retained event to every later subscriber, whoever it names.
    "task-retain-only": (
        "tidings.publish",
        lambda m: [TOPIC, {"m": m}, None, ["1"], True],
        "retain cannot go with",
    ),
    "task-too-many-users": (
        "tidings.publish",
        lambda m: [TOPIC, {"m": m}, None, [f"user-{i}" for i in range(1001)]],
        "at most 1000",
    ),
}


def drain_dead(url: str) -> list[tuple[str, dict[str, Any]]]:
    """Every message of this test's dead-letter queue: (body as text, headers)."""
    found = []
    with Connection(url) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(DEAD_QUEUE, no_ack=True)) is not None:
            body = message.body
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            found.append((text, dict(message.headers or {})))
    return found


def dead_letter_of(url: str, marker: str, timeout: float = 20) -> dict[str, Any]:
    """The headers of the dead letter whose body holds `marker`, once it is there."""
    deadline = time.monotonic() + timeout
    while not (dead := [headers for body, headers in drain_dead(url) if marker in body]):
        assert time.monotonic() < deadline, "the message was not dead-lettered"
        time.sleep(0.2)
    return dead[0]


def test_poison_messages_dead_lettered_good_ones_delivered(
    router, vhost, start_worker, subscribe, tally
):
    worker = start_worker(router, vhost)
    counter = subscribe(router.ws_url, "fault-poison", [TOPIC])
    source = EventSource(vhost, TOPIC)
    poison: dict[str, tuple[str, str]] = {}  # marker -> (kind, reason expected)
    kinds = [*RAW, *TASKS]
    every = GOOD // (len(kinds) * ROUNDS)
    try:
        started = time.monotonic()
        for seq in range(GOOD):
            if seq % 10 == 0:
                source.task(seq)
            else:
                source.raw(seq)
            if seq % every == 0 and len(poison) < len(kinds) * ROUNDS:
                kind = kinds[len(poison) % len(kinds)]
                marker = f"poison-{kind}-{uuid.uuid4()}"
                if kind in RAW:
                    make, routing_key, reason = RAW[kind]
                    source.raw_body(make(marker), routing_key)
                else:
                    name, make_args, reason = TASKS[kind]
                    source.send_task(name, make_args(marker))
                poison[marker] = (kind, reason)
        assert len(poison) == len(kinds) * ROUNDS

        expected = set(source.sent)
        counter.wait_all(expected, 90, lambda: rabbit.explain(vhost))
        elapsed = time.monotonic() - started
        # Nothing stuck: every message was acked, good or bad.
        deadline = time.monotonic() + 30
        while True:
            depths = rabbit.queue_depths(vhost)
            if depths["tidings.events"] == (0, 0) and depths["tidings"] == (0, 0):
                break
            assert time.monotonic() < deadline, f"messages stuck in the worker: {depths}"
            time.sleep(0.5)
        dead = drain_dead(vhost)

        by_marker = {}
        for body, headers in dead:
            for marker in poison:
                if marker in body:
                    by_marker.setdefault(marker, []).append(headers)
        missing = {poison[m][0] for m in poison if m not in by_marker}
        assert not missing, f"poison not dead-lettered: {sorted(missing)}"
        for marker, (kind, reason) in poison.items():
            headers = by_marker[marker][0]
            assert reason in headers.get(REASON_HEADER, ""), (kind, headers)
        for marker, (kind, _) in poison.items():
            if kind in RAW:
                routing_key = RAW[kind][1]
                assert by_marker[marker][0].get("x-tidings-routing-key") == routing_key, kind
        assert worker.alive()
        # Exactly the good ones, each once: no poison was published too. A last
        # good event, on the same topic through the same worker session, arrives
        # after anything published before it.
        last = source.raw(1)
        counter.wait_all({last}, 30, lambda: rabbit.explain(vhost))
        assert set(counter.seen) == expected | {last}, "something besides the good events"
        assert counter.received == len(expected) + 1, "a good event arrived twice"
        tally(
            produced=len(expected),
            poison=len(poison),
            poison_kinds=len(kinds),
            delivered=len(counter.seen),
            duplicates=counter.duplicates(),
            dead_lettered=len(dead),
            delivered_in_s=round(elapsed, 1),
        )
    finally:
        source.close()


def test_publisher_fails_a_payload_it_cannot_encode(router):
    """Below the worker's checks: the Publisher itself never leaves such a publish hanging."""
    config = Settings.from_environ(os.environ)
    publisher = Publisher(config.__class__(**{**config.__dict__, "router_url": router.rs_url}))
    publisher.start()
    try:
        publisher.connection.wait_joined(20)
        with pytest.raises(PublishError, match="cannot encode"):
            publisher.publish(TOPIC, {"x": 2**70}, timeout=10)
        publisher.publish(TOPIC, {"x": 1}, timeout=10)  # and the session is fine
    finally:
        publisher.close()


class _YearTwentyThousand(datetime):
    """A header value py-amqp writes as an AMQP timestamp beyond what a datetime holds."""

    SECONDS = 2**39  # about the year 19400

    def utctimetuple(self) -> tuple[int, ...]:  # type: ignore[override]
        # calendar.timegm adds the seconds up without asking a date to hold them.
        return (1970, 1, 1, 0, 0, self.SECONDS)

    @classmethod
    def seconds(cls) -> int:
        return cls.SECONDS


def test_a_header_no_date_can_hold_costs_its_message_not_the_connection(
    router, vhost, start_worker, subscribe
):
    # Before: py-amqp raised while reading the frame, Celery took it for a lost
    # connection and got the same message again, about five times a second, forever.
    worker = start_worker(router, vhost)
    counter = subscribe(router.ws_url, "fault-poison", [TOPIC])
    source = EventSource(vhost, TOPIC)
    try:
        marker = f"poison-header-{uuid.uuid4()}"
        source.raw_body(
            _publish(marker, payload={"m": marker}),
            "publish",
            headers={"x-sent": _YearTwentyThousand(2000, 1, 1)},
        )
        good = source.raw(1)
        counter.wait_all({good}, 30, lambda: rabbit.explain(vhost))
        headers = dead_letter_of(vhost, marker)
        assert "beyond the year 9999" in headers[REASON_HEADER]
        assert headers["x-sent"] == f"timestamp {_YearTwentyThousand.seconds()}"
        assert worker.alive()
        lost = [line for line in worker.log.lines if "Connection to broker lost" in line]
        assert not lost, lost
    finally:
        source.close()


@pytest.mark.parametrize("where", ["property", "routing key"])
def test_text_that_is_not_utf8_costs_its_message_not_the_worker(
    router, vhost, start_worker, subscribe, where
):
    # Before: py-amqp raised UnicodeDecodeError while reading the message, the
    # worker exited, and every worker started after it died the same way.
    import amqp

    worker = start_worker(router, vhost)
    counter = subscribe(router.ws_url, "fault-poison", [TOPIC])
    source = EventSource(vhost, TOPIC)
    marker = f"poison-{where.replace(' ', '-')}-{uuid.uuid4()}"
    connection = amqp.Connection(
        host="127.0.0.1:5672",
        userid="guest",
        password="guest",
        virtual_host=rabbit.vhost_of(vhost),
        confirm_publish=True,
    )
    connection.connect()
    try:
        body = _publish(marker, payload={"m": marker}).encode()
        if where == "property":
            message = amqp.Message(
                body, message_id=b"\xff\xfe\xfd", content_type="application/json"
            )
            routing_key: str | bytes = "publish"
        else:
            message = amqp.Message(body, content_type="application/json")
            routing_key = b"publish.\xff\xfe"  # py-amqp sends bytes as they are
        connection.channel().basic_publish(
            message, exchange="tidings.events", routing_key=routing_key
        )
        good = source.raw(1)
        counter.wait_all({good}, 30, lambda: rabbit.explain(vhost))
        headers = dead_letter_of(vhost, marker)
        assert "not UTF-8" in headers[REASON_HEADER]
        if where == "routing key":  # kept, its bytes that are not UTF-8 replaced
            assert headers["x-tidings-routing-key"] == "publish.\ufffd\ufffd"
        assert worker.alive()
        late = [line for line in worker.log.lines if "never reached the ledger" in line]
        assert not late, late
    finally:
        connection.close()
        source.close()


BOMB = bz2.compress(b"a" * (40 << 20))  # 49 bytes that grow to 40 MiB
TASK_HEADERS = {"lang": "py", "task": "tidings.publish"}
TASK_BODY = json.dumps([[TOPIC, {"m": "MARKER"}], {}, {}]).encode()

# case: (exchange, task headers or None for a raw event, body, extra headers, reason)
UNTAKEABLE: dict[str, tuple[str, dict[str, Any] | None, bytes, dict[str, Any], str]] = {
    "raw-corrupt-gzip": (
        "tidings.events",
        None,
        b"not gzip at all",
        {"compression": "application/x-gzip"},
        "not valid zlib data",
    ),
    "raw-bz2-bomb": (
        "tidings.events",
        None,
        BOMB,
        {"compression": "application/x-bz2"},
        "larger than 16777216 bytes",
    ),
    "task-bz2-bomb": (
        "tidings",
        TASK_HEADERS,
        BOMB,
        {"compression": "application/x-bz2"},
        "larger than 16777216 bytes",
    ),
    "task-unknown": (
        "tidings",
        {**TASK_HEADERS, "task": "tidings.no_such_task"},
        TASK_BODY,
        {},
        "unknown task 'tidings.no_such_task'",
    ),
    "task-empty-body": ("tidings", TASK_HEADERS, b"", {}, "must be [args, kwargs, options]"),
    "task-body-not-a-list": (
        "tidings",
        TASK_HEADERS,
        b'{"args": []}',
        {},
        "must be [args, kwargs, options]",
    ),
    "task-protocol-1-without-name": ("tidings", {}, b'{"args": []}', {}, "not a Celery task"),
    "task-not-json": ("tidings", TASK_HEADERS, b"[not json", {}, "cannot be decoded"),
    "task-name-a-list": (
        "tidings",
        {**TASK_HEADERS, "task": ["tidings.publish"]},
        TASK_BODY,
        {},
        "'task' header must be text",
    ),
    "task-id-a-list": ("tidings", {**TASK_HEADERS, "id": ["x"]}, TASK_BODY, {}, "must be text"),
    "task-without-id": ("tidings", {**TASK_HEADERS, "id": None}, TASK_BODY, {}, "KeyError"),
    "task-timelimit-not-a-list": (
        "tidings",
        {**TASK_HEADERS, "timelimit": 5, "expires": "2100-01-01T00:00:00+00:00"},
        TASK_BODY,
        {},
        "could not take the task message",
    ),
    "task-eta-no-date-holds": (
        "tidings",
        {**TASK_HEADERS, "eta": "0001-01-01T00:00:00+05:00"},
        TASK_BODY,
        {},
        "rejected the task",
    ),
    "task-protocol-1-misfit-arguments": (
        "tidings",
        {},
        b'{"task": "tidings.publish", "id": "MARKER", "args": [1, 2, 3, 4, 5, 6, 7], "kwargs": {}}',
        {},
        "arguments do not fit tidings.publish",
    ),
    "task-protocol-1-name-a-list": (
        "tidings",
        {},
        b'{"task": ["tidings.publish"], "id": "MARKER", "args": [], "kwargs": {}}',
        {},
        "could not take the task message",
    ),
    "task-body-too-large": (
        "tidings",
        TASK_HEADERS,
        json.dumps([[TOPIC, {"m": "MARKER", "big": "x" * (4 << 20)}], {}, {}]).encode(),
        {},
        "larger than 4194304 bytes",
    ),
    # A pickle from the network would be code execution: never loaded, kept.
    "task-pickle": (
        "tidings",
        TASK_HEADERS,
        b"\x80\x04K\x01.",
        {"content_type": "application/x-python-serialize"},
        "cannot be decoded",
    ),
}


@pytest.mark.parametrize("case", list(UNTAKEABLE))
def test_a_body_the_worker_cannot_take_is_dead_lettered_and_nothing_waits(
    router, vhost, start_worker, subscribe, case
):
    # Before: kombu decompressed without a limit (40 MiB here, 3.7 GB from 1.4 KB);
    # Celery dropped an unknown task; a raw event's decode error reached the
    # consumer's loop; an empty task body failed in the pool, unsettled. And the
    # ledger, never seeing these tags, acked one by one for good.
    exchange, task_headers, body, extra, reason = UNTAKEABLE[case]
    worker = start_worker(router, vhost)
    counter = subscribe(router.ws_url, "fault-poison", [TOPIC])
    source = EventSource(vhost, TOPIC)
    marker = f"poison-{case}-{uuid.uuid4()}"
    extra = dict(extra)
    content_type = extra.pop("content_type", "application/json")
    headers = {"x-marker": marker, **extra}
    if task_headers:
        headers.update({"id": marker, **task_headers})
    try:
        with Connection(vhost, transport_options={"confirm_publish": True}) as connection:
            Producer(connection).publish(
                body.replace(b"MARKER", marker.encode()),
                exchange=exchange,
                routing_key="publish" if exchange == "tidings.events" else "tidings",
                headers={k: v for k, v in headers.items() if v is not None},
                content_type=content_type,
                content_encoding="utf-8",
                serializer=None,
                delivery_mode=2,
            )
        good = [source.raw(1), source.task(2), source.raw(3)]
        counter.wait_all(set(good), 30, lambda: rabbit.explain(vhost))
        deadline = time.monotonic() + 20
        while not (
            dead := [h for b, h in drain_dead(vhost) if marker in b or h.get("x-marker") == marker]
        ):
            assert time.monotonic() < deadline, "the message was not dead-lettered"
            time.sleep(0.2)
        assert reason in dead[0][REASON_HEADER], dead[0]
        if case == "task-unknown":  # kept as a task: a replay sends it again
            assert dead[0]["x-tidings-task"] == "tidings.no_such_task"
        else:
            assert "x-tidings-routing-key" in dead[0] or exchange == "tidings", dead[0]
        depths = rabbit.queue_depths(vhost)
        assert depths["tidings.events"] == (0, 0) and depths["tidings"] == (0, 0), depths
        assert worker.alive()
        gapped = [line for line in worker.log.lines if "never reached the ledger" in line]
        assert not gapped, gapped
    finally:
        source.close()


def test_a_task_run_by_the_pool_is_acked_by_the_ledger_after_its_publish(
    router, vhost, start_worker, subscribe
):
    # A chain Celery cannot follow fails the run after the task published: only
    # the ledger, having adopted the message, acks it. Keyed by delivery tag,
    # which Celery's requests do not carry, it never adopted one: unacked for good.
    worker = start_worker(router, vhost)
    counter = subscribe(router.ws_url, "fault-poison", [TOPIC])
    source = EventSource(vhost, TOPIC)
    marker = f"pool-{uuid.uuid4()}"
    try:
        with Connection(vhost, transport_options={"confirm_publish": True}) as connection:
            Producer(connection).publish(
                json.dumps([[TOPIC, {"m": marker}], {}, {"chain": "not a chain"}]),
                exchange="tidings",
                routing_key="tidings",
                headers={**TASK_HEADERS, "id": marker},
                content_type="application/json",
                content_encoding="utf-8",
                serializer=None,
            )
        counter.wait_all({marker}, 30, lambda: rabbit.explain(vhost))
        deadline = time.monotonic() + 20
        while (depths := rabbit.queue_depths(vhost))["tidings"] != (0, 0):
            assert time.monotonic() < deadline, f"left unacked: {depths}"
            time.sleep(0.2)
        assert worker.alive()
    finally:
        source.close()
