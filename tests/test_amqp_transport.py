"""The workers' broker transport: buffered frames are read whole, in order, and never stranded."""

from __future__ import annotations

import fcntl
import random
import socket
import struct
import termios
import time
import uuid

import pytest
from amqp.exceptions import UnexpectedFrame
from kombu import Connection, Consumer, Producer, Queue
from kombu.asynchronous import Hub

from workers import amqp_transport
from workers.amqp_transport import BufferedTCPTransport


def _frame(kind: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([end])


def _transport() -> tuple[BufferedTCPTransport, socket.socket]:
    ours, peer = socket.socketpair()
    transport = BufferedTCPTransport("127.0.0.1:1", connect_timeout=1)
    transport.sock = ours
    transport._setup_transport()
    transport.connected = True
    return transport, peer


def test_frames_cut_anywhere_are_read_whole_in_order_and_nothing_is_lost() -> None:
    transport, peer = _transport()
    frames = [(1, 1, b"deliver"), (2, 1, b"h" * 40), (3, 1, b"b" * 70_000), (8, 0, b"")]
    data = b"".join(_frame(*f) for f in frames)
    rng = random.Random(7)
    got, sent = [], 0
    while len(got) < len(frames):
        with transport.having_timeout(0):
            try:
                got.append(transport.read_frame())
                continue
            except TimeoutError:
                pass  # the socket is empty: the part of a frame read so far is kept
        assert sent < len(data), "every byte was sent, yet a frame is missing"
        cut = sent + rng.randint(1, 9000)
        peer.sendall(data[sent:cut])
        sent = min(cut, len(data))
    assert got == frames
    assert not transport.has_frame()


def test_a_whole_frame_already_read_needs_no_socket() -> None:
    transport, peer = _transport()
    peer.sendall(_frame(1, 1, b"one") + _frame(1, 1, b"two"))
    with transport.having_timeout(1):
        assert transport.read_frame() == (1, 1, b"one")
    peer.close()  # the second frame is already in the buffer
    assert transport.has_frame()
    assert transport.buffered_frame() == (1, 1, b"two")
    assert transport.buffered_frame() is None


def test_a_frame_without_its_end_octet_breaks_the_connection() -> None:
    transport, peer = _transport()
    peer.sendall(_frame(1, 1, b"x", end=0x00))
    with pytest.raises(UnexpectedFrame, match="frame_end"):
        transport.read_frame()
    assert not transport.connected


def test_a_peer_that_closes_mid_frame_is_an_error_not_a_wait() -> None:
    transport, peer = _transport()
    peer.sendall(_frame(1, 1, b"whole")[:5])
    peer.close()
    with pytest.raises(OSError, match="closed"):
        transport.read_frame()
    assert not transport.connected


def test_the_worker_app_reads_through_the_buffered_transport(broker_url: str) -> None:
    from workers.celery_app import app

    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, amqp_transport.Transport)
        connection.connect()
        assert isinstance(connection.connection.transport, BufferedTCPTransport)


def _waiting(sock: socket.socket) -> int:
    return int(struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0])


def _settle(sock: socket.socket, timeout: float = 5.0) -> None:
    """Wait until RabbitMQ stopped sending: what waits in the socket (maybe nothing, if a
    read took it all already) has not changed for 0.3 s."""
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.3:
        assert time.monotonic() < deadline, "RabbitMQ kept sending"
        waiting = _waiting(sock)
        if waiting != last:
            last, stable_since = waiting, time.monotonic()
        time.sleep(0.01)


def test_messages_a_blocking_read_left_in_the_buffer_are_consumed_without_new_data(
    broker_url: str,
) -> None:
    # A blocking read (a consumer waiting for consume-ok or qos-ok) takes all the
    # socket holds and returns after one method: the messages behind it stay in
    # the buffer, and the socket, now empty, gives Celery's loop no reason to
    # read. Without the check before each poll they would wait there for good.
    # (Starting the consumer may leave it so already; else blocking drains of one
    # message at a time until the socket is empty do.)
    count = 100
    name = f"tidings-test-burst-{uuid.uuid4().hex[:8]}"
    with Connection(broker_url, transport=amqp_transport.Transport) as connection:
        channel = connection.channel()
        queue = Queue(name, durable=False, auto_delete=True)(channel)
        queue.declare()
        producer = Producer(channel)
        for n in range(count):
            producer.publish({"n": n}, routing_key=name, serializer="json")
        got: list[int] = []

        def on_message(body: dict[str, int], message: object) -> None:
            got.append(body["n"])
            message.ack()  # type: ignore[attr-defined]

        consumer = Consumer(connection.channel(), [queue], callbacks=[on_message])
        hub = Hub()
        try:
            consumer.consume()
            amqp_connection = connection.connection
            _settle(amqp_connection.sock)
            assert _waiting(amqp_connection.sock) < amqp_transport.CHUNK
            while _waiting(amqp_connection.sock):  # blocking reads, one message each
                amqp_connection.drain_events(timeout=5)
            assert len(got) < count and amqp_connection.transport.has_frame()
            connection.transport.register_with_event_loop(amqp_connection, hub)
            turns = hub.create_loop()
            deadline = time.monotonic() + 5
            while len(got) < count and time.monotonic() < deadline:
                next(turns)
        finally:
            hub.close()
        assert got == list(range(count))
