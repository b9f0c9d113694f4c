"""Dead letters and hand-backs: written with publisher confirms, headers that can be written."""

from __future__ import annotations

import amqp.serialization

from workers import amqp_tolerance
from workers.letterbox import confirming


def test_the_letterbox_connects_with_publisher_confirms():
    # Before: dead letters went out without confirms, and the original was acked
    # at once: a broker that lost the copy lost the event.
    connection = confirming("amqp://guest:guest@127.0.0.1:5672//")()
    assert connection.transport_options == {"confirm_publish": True}


def test_a_header_timestamp_beyond_9999_is_decoded_marked_and_written_back_as_text():
    amqp_tolerance.install()
    seconds = 2**40  # about the year 36812
    table = b"\x00\x00\x00\x0e" + b"\x06x-sentT" + seconds.to_bytes(8, "big")
    (headers,), _ = amqp.serialization.loads("F", table, 0)
    assert headers["x-sent"] == seconds
    reason = amqp_tolerance.undecodable({"nested": headers})
    assert reason is not None and "beyond the year 9999" in reason
    assert amqp_tolerance.encodable(headers) == {"x-sent": f"timestamp {seconds}"}
    assert amqp_tolerance.undecodable({"x-sent": "2026-11-28"}) is None


def test_a_property_that_is_not_utf8_is_decoded_marked_and_written_back_as_text():
    # Before: py-amqp raised UnicodeDecodeError while reading the message and the
    # worker died, again on every restart.
    amqp_tolerance.install()
    text = amqp.serialization.pstr_t(b"\xff\xfeid")
    assert isinstance(text, amqp_tolerance.UndecodableText)
    message = type(
        "Message",
        (),
        {
            "headers": {},
            "properties": {"message_id": text},
            "content_type": "a",
            "content_encoding": "b",
        },
    )()
    assert "not UTF-8" in (amqp_tolerance.unreadable(message) or "")
    assert amqp_tolerance.encodable({"x": text})["x"] == "\ufffd\ufffdid"
    assert amqp.serialization.pstr_t(b"fine") == "fine"
