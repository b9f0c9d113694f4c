"""Deliveries decoded in one step reach kombu as py-amqp's frame-by-frame reader gives them."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import amqp
import amqp.serialization
import pytest
from kombu import Connection, Consumer, Queue

from workers import amqp_delivery, amqp_transport
from workers.amqp_delivery import locate

# Larger than RabbitMQ's frame size (128 KiB): a body in several frames.
BIG = 300_000


def _messages() -> list[amqp.Message]:
    """Every kind of property and body: text, bytes, encodings py-amqp cannot decode
    with, headers of every type, no body at all, bodies that span frames."""
    headers = {"n": 7, "s": "text", "f": 1.5, "t": True, "l": [1, "a"], "d": {"x": None}}
    headers["at"] = datetime(2026, 1, 2, 3, 4, 5)
    kinds: list[tuple[bytes, dict[str, Any]]] = [
        (b'{"type":"publish"}', {"content_type": "application/json"}),
        ('{"é": 1}'.encode(), {"content_type": "application/json", "content_encoding": "utf-8"}),
        (b"\xff\xfe not utf-8", {"content_encoding": "utf-8"}),
        (b"raw", {"content_encoding": "binary"}),
        (b"h", {"application_headers": headers, "message_id": "m-1", "priority": 3}),
        (b"t", {"timestamp": 1_767_323_045, "type": "k", "app_id": "a"}),
        (b"", {"delivery_mode": 2}),
        (b"x" * BIG, {"correlation_id": "c", "reply_to": "r", "expiration": "60000"}),
        (b"after the big one", {"user_id": "guest", "cluster_id": "z"}),
    ]
    return [amqp.Message(body, **props) for _ in range(30) for body, props in kinds]


def _seen(message: Any) -> tuple[Any, ...]:
    info = {k: v for k, v in message.delivery_info.items() if k != "consumer_tag"}
    return (
        message.body,
        type(message.body),
        message.content_type,
        message.content_encoding,
        message.headers,
        message.properties,
        info,
        message.delivery_tag,
    )


def _consume(
    url: str, queue: str, transport: Any, count: int, ack: bool, kinds: list[type] | None = None
) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []

    def on_message(message: Any) -> None:
        seen.append(_seen(message))
        if kinds is not None:
            kinds.append(type(message))
        if ack:
            message.ack()

    with Connection(url, transport=transport) as connection:
        channel = connection.channel()
        channel.basic_qos(0, count, False)
        with Consumer(channel, [Queue(queue, no_declare=True)], on_message=on_message):
            while len(seen) < count:
                connection.drain_events(timeout=10)
    return seen


@pytest.fixture
def queue(broker_url: str) -> Iterator[str]:
    name = f"tidings-test-delivery-{uuid.uuid4().hex[:8]}"
    with Connection(broker_url) as connection:
        channel = connection.default_channel
        channel.queue_declare(name, durable=False, auto_delete=False)
        yield name
        channel.queue_delete(name)


def test_what_kombu_sees_is_what_py_amqp_gives(
    broker_url: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = _messages()
    with Connection(broker_url) as connection:
        channel = connection.default_channel
        for message in messages:
            channel.basic_publish(message, routing_key=queue)
    # py-amqp's own reader first, without acking: the same messages then come
    # again (redelivered) through the one-step path.
    plain = _consume(broker_url, queue, "pyamqp", len(messages), ack=False)
    decoded: list[int] = []
    one_step = amqp_delivery.deliver

    def counted(channel: Any, buffer: bytes, located: Any) -> None:
        decoded.append(located[0])
        one_step(channel, buffer, located)

    monkeypatch.setattr(amqp_delivery, "deliver", counted)
    kinds: list[type] = []
    ours = _consume(broker_url, queue, amqp_transport.Transport, len(messages), True, kinds)

    assert len(ours) == len(plain) == len(messages)
    for before, after in zip(plain, ours, strict=True):
        assert before[-2]["redelivered"] is False and after[-2]["redelivered"] is True
        after[-2]["redelivered"] = False
        assert after == before
    # Nearly all went the one-step way; the empty and the big bodies never do.
    assert len(messages) * 2 // 3 <= len(decoded) <= len(messages) * 7 // 9
    # Those reached kombu's consumer as the messages they were made as, not wrapped again.
    assert kinds.count(amqp_delivery.Received) == len(decoded)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def _delivery(body: bytes, channel: int = 1, body_size: int | None = None) -> list[bytes]:
    method = struct.pack(">HH", 60, 60) + b"\x03tag" + struct.pack(">QB", 5, 1) + b"\x00\x01q"
    size = len(body) if body_size is None else body_size
    header = struct.pack(">HHQH", 60, 0, size, 0x8000) + b"\x04text"
    return [_frame(1, channel, method), _frame(2, channel, header), _frame(3, channel, body)]


def test_a_whole_delivery_is_located_and_decoded() -> None:
    frames = _delivery(b"hello")
    buffer = b"junk" + b"".join(frames) + _frame(8, 0, b"")
    located = locate(buffer, 4)
    assert located is not None
    assert located[0] == 1 and located[-1] == 4 + sum(map(len, frames))

    class Channel:
        auto_decode = True

        def _on_basic_deliver(self, *args: Any) -> None:
            self.args = args

    channel = Channel()
    amqp_delivery.deliver(channel, buffer, located)
    *fields, message = channel.args
    assert fields == ["tag", 5, True, "", "q"]
    assert (message.body, message.properties, message.content_type) == (
        b"hello",
        {"content_type": "text"},
        "text",
    )


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(b"".join(_delivery(b"hello"))[:-1], id="the body frame not yet whole"),
        pytest.param(b"".join(_delivery(b"hello"))[:30], id="the header not yet whole"),
        pytest.param(b"".join(_delivery(b"hello", body_size=10)), id="a body in several frames"),
        pytest.param(b"".join(_delivery(b"")), id="an empty body sent as a frame"),
        pytest.param(
            b"".join(_delivery(b"x")[:2]) + _delivery(b"x", channel=2)[2],
            id="another channel's body",
        ),
        pytest.param(
            b"".join(_delivery(b"hi"))[:-1] + b"\x00", id="a body frame without its end octet"
        ),
        pytest.param(
            _frame(1, 1, struct.pack(">HH", 60, 71)) + b"".join(_delivery(b"x")[1:]),
            id="not a Deliver",
        ),
    ],
)
def test_what_py_amqp_must_see_frame_by_frame_is_not_located(frames: bytes) -> None:
    assert locate(frames, 0) is None


def test_a_header_table_longer_than_its_frame_is_an_error_not_a_read_of_the_body() -> None:
    method = struct.pack(">HH", 60, 60) + b"\x03tag" + struct.pack(">QB", 5, 0) + b"\x00\x01q"
    table = b"\x01kS" + struct.pack(">I", 2) + b"ok"
    # The table says 200 bytes. Read on past its frame, the frame's end octet
    # would be the length of a key made of the body frame's start and the body,
    # whose 200th byte would be a void value: a table read without an error.
    body = b"b" * 199 + b"V" + b"b" * 40
    header = struct.pack(">HHQH", 60, 0, len(body), 0x2000) + struct.pack(">I", 200) + table
    buffer = _frame(1, 1, method) + _frame(2, 1, header) + _frame(3, 1, body)
    located = locate(buffer, 0)
    assert located is not None

    class Channel:
        auto_decode = True

        def _on_basic_deliver(self, *args: Any) -> None:
            raise AssertionError("delivered with a header read from the body")

    with pytest.raises((struct.error, IndexError)):
        amqp_delivery.deliver(Channel(), buffer, located)
    with pytest.raises((struct.error, IndexError)):  # as py-amqp itself does
        amqp.serialization.decode_properties_basic(header, 12)
