"""The RawSocket codec of backend sessions: the one place that touches autobahn's internals.

An acknowledged publish through autobahn costs a message object, a future
and a debug line formatted whether logged or not; at thousands a second that
was more than the rest of the publish. Here a publish is written as its
MsgPack list, its reply completed as it is read, a batch of messages written
in one go, and each message as one segment (autobahn writes the length
prefix and the message separately). `tests/test_autobahn_contract.py` fails
when an autobahn upgrade moves what this relies on.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgpack
from autobahn.asyncio.rawsocket import WampRawSocketClientFactory, WampRawSocketClientProtocol
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.exception import ApplicationError, SerializationError, TransportLost
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer

from publisher import meters
from publisher.publish_meters import ACK_SECONDS, IN_FLIGHT
from publisher.publish_meters import PUBLISHED as PUBLISHED_METER

log = logging.getLogger(__name__)


# How autobahn encodes MsgPack (`packb(..., use_bin_type=True)`), for messages
# sent without its message objects; `packb` makes a new Packer per call.
def _packer() -> Callable[[Any], bytes]:
    return msgpack.Packer(use_bin_type=True).pack  # type: ignore[no-any-return]


# WAMP message types of an acknowledged publish.
PUBLISH, PUBLISHED, ERROR = 16, 17, 8

Done = Callable[[BaseException | None], None]


class QuickPublishes(dict[int, tuple[Done, float]]):
    """Publishes sent without autobahn's objects, awaiting the router's reply: by request
    id, oldest first, how to complete each and when it was sent."""

    def oldest_sent(self) -> float | None:
        return next(iter(self.values()))[1] if self else None

    def fail_all(self, error: BaseException) -> None:
        pending = list(self.values())
        self.clear()
        meters.add(IN_FLIGHT, -len(pending))
        for done, _ in pending:
            _reply(done, error)


def publish_quick(
    session: Any, topic: str, payload: Any, options: dict[str, Any], done: Done
) -> bool:
    """An acknowledged PUBLISH on `session`, completed through `done` (see the module docstring).

    `done` gets None on the router's acknowledgement, ApplicationError on its
    refusal, TransportLost if the connection goes first. False: the session's
    transport cannot (a WebSocket); use autobahn's `publish`. Raises
    TransportLost or SerializationError like `publish`.
    """
    transport = session._transport
    if not isinstance(transport, RawSocket):
        return False
    request = session._request_id_gen.next()
    quick: QuickPublishes = session.quick
    quick[request] = (done, time.monotonic())
    meters.add(IN_FLIGHT)
    try:
        transport.send_raw([PUBLISH, request, options, topic, [payload]])
    except Exception:
        del quick[request]
        meters.add(IN_FLIGHT, -1)
        raise
    return True


def protocol_of(session: Any) -> RawSocket | None:
    """The session's RawSocket protocol, or None (no transport, or a WebSocket)."""
    transport = getattr(session, "_transport", None)
    return transport if isinstance(transport, RawSocket) else None


def _refusal(message: list[Any]) -> BaseException:
    """The router's ERROR reply to a PUBLISH as autobahn would raise it."""
    try:
        args = message[5] if len(message) > 5 else []
        kwargs = message[6] if len(message) > 6 else {}
        return ApplicationError(message[4], *args, **kwargs)
    except Exception:
        return ApplicationError(ApplicationError.INVALID_ARGUMENT, f"malformed ERROR {message!r}")


def _reply(done: Done, error: BaseException | None) -> None:
    try:
        done(error)
    except Exception:
        log.exception("completing a publish failed")


class RawSocket(WampRawSocketClientProtocol):  # type: ignore[misc]
    """RawSocket that writes a message as one segment, and a corked batch as one write."""

    _corked: list[bytes] | None = None
    _pack: Callable[[Any], bytes] | None = None

    def _on_connection_lost(self, exc: Any) -> None:
        if getattr(self, "_session", None) is None:
            return  # closed before the handshake: no session to tell (autobahn warns)
        super()._on_connection_lost(exc)

    def sendString(self, data: bytes) -> None:
        if len(data) > self.max_length_send:
            # A refusal of this message, not a fault of the link: never retried.
            raise SerializationError(
                f"the message is {len(data)} bytes encoded; the router takes at most "
                f"{self.max_length_send}"
            )
        frame = struct.pack(self.prefix_format, len(data)) + data
        if self._corked is not None:
            self._corked.append(frame)
        else:
            self.transport.write(frame)

    def send_raw(self, message: list[Any]) -> None:
        """Send a WAMP message given as its list form, as autobahn would marshal it."""
        pack = self._pack
        if pack is None:
            # One per connection, used on its loop only (a Packer is not thread-safe).
            pack = self._pack = _packer()
        self._send_encoded(pack, message)

    def stringReceived(self, payload: bytes) -> None:
        quick = getattr(self._session, "quick", None)
        if quick:
            # The acknowledgement of a quick publish completes it here; any
            # other message goes through autobahn as usual.
            try:
                message = msgpack.unpackb(payload, raw=False)
            except Exception:
                message = None
            if type(message) is list and len(message) >= 3:
                if message[0] == PUBLISHED and message[1] in quick:
                    done, sent = quick.pop(message[1])
                    ACK_SECONDS.observe(time.monotonic() - sent)
                    meters.add(PUBLISHED_METER)
                    meters.add(IN_FLIGHT, -1)
                    _reply(done, None)
                    return
                if message[0] == ERROR and message[1] == PUBLISH and message[2] in quick:
                    error = _refusal(message)
                    meters.add(IN_FLIGHT, -1)
                    _reply(quick.pop(message[2])[0], error)
                    return
        super().stringReceived(payload)

    def send(self, msg: Any) -> None:
        # autobahn's own send formats a debug line per message, logged or not.
        self._send_encoded(lambda m: self._serializer.serialize(m)[0], msg)

    def _send_encoded(self, encode: Callable[[Any], bytes], message: Any) -> None:
        if not self.isOpen():
            raise TransportLost()
        try:
            data = encode(message)
        except Exception as exc:
            raise SerializationError(f"unable to serialize WAMP message ({exc})") from exc
        self.sendString(data)

    def cork(self) -> None:
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        frames, self._corked = self._corked, None
        if frames and self.transport is not None:
            self.transport.write(b"".join(frames))

    def drop(self) -> None:
        """Drop the connection at once, without a closing handshake (a half-open link)."""
        if self.transport is not None:
            self.transport.abort()


def transport_factory(url: str, make_session: Callable[[], Any]) -> tuple[Any, str, int]:
    """(protocol factory, host, port) for a router URL: rs://host:port or ws://host:port/path."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "rs":
        # MsgPack: the backend link carries every event; it is the cheaper codec.
        rawsocket = WampRawSocketClientFactory(make_session, serializer=MsgPackSerializer())
        rawsocket.protocol = RawSocket
        return rawsocket, host, parts.port or 8081
    if parts.scheme == "ws":
        factory = WampWebSocketClientFactory(make_session, url=url, serializers=[JsonSerializer()])
        return factory, host, parts.port or 80
    raise ValueError(f"unsupported router URL {url!r}: use rs://host:port or ws://host:port/path")
