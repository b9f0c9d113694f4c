"""The backend link's codec: frames, batches, and quick publishes completed from their replies."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from autobahn.wamp.exception import ApplicationError, SerializationError, TransportLost
from autobahn.wamp.message import Publish
from autobahn.wamp.serializer import MsgPackSerializer

from publisher import rawsocket
from publisher.rawsocket import ERROR, PUBLISH, PUBLISHED, QuickPublishes, RawSocket


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def abort(self) -> None:
        self.aborted = True


class Session:
    """What the protocol and `publish_quick` use of a session."""

    def __init__(self) -> None:
        self.quick = QuickPublishes()
        self.received: list[Any] = []
        self._next = 0

        class Ids:
            def next(inner) -> int:
                self._next += 1
                return self._next

        self._request_id_gen = Ids()

    def onMessage(self, message: Any) -> None:
        self.received.append(message)


def protocol() -> tuple[RawSocket, Transport, Session]:
    proto = RawSocket()
    proto._serializer = MsgPackSerializer()
    proto.transport = Transport()
    session = Session()
    proto._session = session
    session._transport = proto  # type: ignore[attr-defined]
    return proto, proto.transport, session


def frame(payload: bytes) -> bytes:
    return struct.pack("!L", len(payload)) + payload


def test_a_message_is_one_write_of_prefix_and_payload():
    proto, transport, _ = protocol()
    proto.sendString(b"abc")
    assert transport.writes == [frame(b"abc")]


def test_a_corked_batch_goes_out_in_one_write():
    proto, transport, _ = protocol()
    proto.cork()
    proto.sendString(b"a")
    proto.sendString(b"bb")
    assert transport.writes == []
    proto.uncork()
    assert transport.writes == [frame(b"a") + frame(b"bb")]


def test_a_quick_publish_is_encoded_as_autobahn_encodes_it():
    _proto, transport, session = protocol()
    options = {"acknowledge": True, "exclude_authid": ["7"]}
    assert rawsocket.publish_quick(session, "tidings.user.1", {"n": 1}, options, lambda e: None)
    ours = transport.writes[0][4:]
    theirs, _ = MsgPackSerializer().serialize(
        Publish(1, "tidings.user.1", args=[{"n": 1}], acknowledge=True, exclude_authid=["7"])
    )
    assert msgpack.unpackb(ours) == msgpack.unpackb(theirs)


def test_the_reply_completes_the_quick_publish_and_nothing_else_sees_it():
    proto, _, session = protocol()
    results: list[Any] = []
    rawsocket.publish_quick(session, "tidings.user.1", {}, {"acknowledge": True}, results.append)
    rawsocket.publish_quick(session, "tidings.user.2", {}, {"acknowledge": True}, results.append)
    proto.stringReceived(msgpack.packb([PUBLISHED, 1, 99]))
    proto.stringReceived(msgpack.packb([ERROR, PUBLISH, 2, {}, "wamp.error.not_authorized"]))
    assert results[0] is None
    assert isinstance(results[1], ApplicationError)
    assert results[1].error == "wamp.error.not_authorized"
    assert not session.quick
    assert session.received == []


def test_a_malformed_error_reply_still_completes_with_a_refusal():
    proto, _, session = protocol()
    results: list[Any] = []
    rawsocket.publish_quick(session, "tidings.user.1", {}, {"acknowledge": True}, results.append)
    proto.stringReceived(msgpack.packb([ERROR, PUBLISH, 1, {}, "x.y", "not a list"]))
    assert isinstance(results[0], ApplicationError)


def test_other_messages_go_through_autobahn():
    proto, _, session = protocol()
    rawsocket.publish_quick(session, "tidings.user.1", {}, {"acknowledge": True}, lambda e: None)
    proto.stringReceived(msgpack.packb([PUBLISHED, 42, 7]))  # not a quick one
    assert len(session.received) == 1 and len(session.quick) == 1


def test_a_lost_connection_fails_every_quick_publish_in_flight():
    _, _, session = protocol()
    results: list[Any] = []
    for n in range(3):
        rawsocket.publish_quick(session, f"t.{n}", {}, {"acknowledge": True}, results.append)
    assert session.quick.oldest_sent() is not None
    session.quick.fail_all(TransportLost())
    assert [type(r) for r in results] == [TransportLost] * 3
    assert session.quick.oldest_sent() is None


def test_too_big_and_closed_are_raised_to_the_sender():
    proto, _, session = protocol()
    proto.max_length_send = 16
    with pytest.raises(SerializationError, match="takes at most 16"):
        rawsocket.publish_quick(session, "t", {"x": "y" * 64}, {}, lambda e: None)
    assert not session.quick  # a failed send leaves nothing waiting
    proto._session = None
    with pytest.raises(TransportLost):
        proto.send_raw([PUBLISH, 1, {}, "t", []])


def test_a_websocket_session_is_not_for_quick_publishes():
    session = Session()
    session._transport = object()  # type: ignore[attr-defined]
    assert not rawsocket.publish_quick(session, "t", {}, {}, lambda e: None)
    assert rawsocket.protocol_of(session) is None


def test_a_publish_that_cannot_be_encoded_leaves_the_next_one_whole():
    # One encoder serves the connection: what a refused message half wrote
    # must not end up in the next one.
    proto, transport, session = protocol()
    proto.isOpen = lambda: True  # type: ignore[method-assign]
    for bad in ({"n": 2**70}, {"x": ["text", object()]}):
        with pytest.raises(SerializationError, match="unable to serialize"):
            rawsocket.publish_quick(session, "tidings.user.1", bad, {}, lambda e: None)
    assert transport.writes == [] and not session.quick
    rawsocket.publish_quick(session, "tidings.user.1", {"n": 1}, {}, lambda e: None)
    (request,) = session.quick
    expected = msgpack.packb([PUBLISH, request, {}, "tidings.user.1", [{"n": 1}]])
    assert transport.writes == [frame(expected)]
