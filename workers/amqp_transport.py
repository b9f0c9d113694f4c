"""The broker transport of workers: py-amqp reading a burst of messages per wake-up, buffered.

py-amqp reads each frame with three `recv` calls (header, payload, end
octet), and kombu's reader takes one message per turn of Celery's loop, with
a switch of the socket to non-blocking and back around every frame: a dozen
system calls per message, and a wake-up of the Publisher's thread for each.
This transport reads what the socket holds in one `recv`, parses the frames
out of that buffer, takes up to `BURST` messages per turn, and hands their
publishes to the Publisher's loop with one wake-up (publisher.connection
`gathered_wakes`). A delivery whose frames are all in the buffer is decoded
in one step (workers.amqp_delivery); what the frames mean is py-amqp's, unchanged.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from amqp import spec
from amqp.exceptions import RecoverableConnectionError, UnexpectedFrame
from amqp.transport import TCPTransport
from kombu.transport import pyamqp

from publisher.connection import gathered_wakes
from workers import amqp_delivery
from workers.amqp_delivery import FRAME_END, Located, Received, frame_header, locate

# Messages read per turn of the consumer's loop: enough to batch a busy queue,
# few enough that timers and heartbeats wait a few milliseconds at most.
BURST = 64
# Bytes asked of the socket at once (a busy queue has many messages waiting).
CHUNK = 65536
_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)

Frame = tuple[int, int, bytes]


class BufferedTCPTransport(TCPTransport):  # type: ignore[misc]
    """A py-amqp TCP transport that parses frames out of one buffer filled a chunk at a time.

    Nothing is taken off the buffer until a whole frame is in it: a read that
    times out, or finds the socket empty, leaves what arrived for the next one.
    """

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._buffer = b""
        self._offset = 0

    def has_frame(self) -> bool:
        """Whether a whole frame was read from the socket and not yet taken."""
        buffer, offset = self._buffer, self._offset
        if len(buffer) - offset < 7:
            return False
        return len(buffer) > offset + 7 + frame_header(buffer, offset)[2]

    def buffered_frame(self) -> Frame | None:
        """A whole frame already read from the socket, or None (no system call)."""
        buffer, offset = self._buffer, self._offset
        if len(buffer) - offset < 7:
            return None
        frame_type, channel, size = frame_header(buffer, offset)
        end = offset + 7 + size
        if len(buffer) <= end:
            return None
        if buffer[end] != FRAME_END:
            self.connected = False
            raise UnexpectedFrame(f"Received frame_end {buffer[end]:#04x} while expecting 0xce")
        self._offset = end + 1
        return frame_type, channel, buffer[offset + 7 : end]

    def read_frame(self, unpack: Any = None) -> Frame:
        """The next frame, reading the socket (with its current timeout) until it is whole."""
        self.fill()
        return self.buffered_frame()  # type: ignore[return-value]

    def fill(self) -> None:
        """Read the socket (with its current timeout) until a whole frame is buffered."""
        while not self.has_frame():
            self._receive()

    def buffered_delivery(self) -> Located | None:
        """Where the next delivery lies in the buffer if all its frames are whole there
        (workers.amqp_delivery), or None; nothing is taken off the buffer."""
        return locate(self._buffer, self._offset)

    def take(self, end: int) -> bytes:
        """Take what the buffer holds up to `end` (a position `buffered_delivery` gave);
        the buffer they lie in."""
        buffer = self._buffer
        self._offset = end
        return buffer

    def _receive(self) -> None:
        buffer = self._buffer[self._offset :]
        wanted = CHUNK
        if len(buffer) >= 7:
            wanted = max(CHUNK, 8 + frame_header(buffer, 0)[2] - len(buffer))
        while True:
            try:
                data = self._quick_recv(wanted)
                break
            except TimeoutError:
                self._keep(buffer)
                raise
            except OSError as exc:
                self._keep(buffer)
                if exc.errno == errno.EINTR:
                    continue
                if exc.errno in _WOULD_BLOCK:
                    raise TimeoutError() from None  # a non-blocking read found nothing
                self.connected = False
                raise
        if not data:
            self._keep(buffer)
            self.connected = False
            raise OSError("Server unexpectedly closed connection")
        self._keep(buffer + data)

    def _keep(self, buffer: bytes) -> None:
        self._buffer, self._offset = buffer, 0


class Channel(pyamqp.Channel):  # type: ignore[misc]
    """kombu's channel, taking a message decoded in one step as the message it is."""

    def message_to_python(self, raw_message: Any) -> Any:
        if type(raw_message) is Received:
            return raw_message
        return super().message_to_python(raw_message)


class Connection(pyamqp.Connection):  # type: ignore[misc]
    """A py-amqp connection over BufferedTCPTransport (TLS keeps py-amqp's own transport)."""

    Channel = Channel
    buffered: type[BufferedTCPTransport] = BufferedTCPTransport

    def Transport(
        self,
        host: str,
        connect_timeout: Any,
        ssl: Any = False,
        read_timeout: Any = None,
        write_timeout: Any = None,
        socket_settings: Any = None,
        **kwargs: Any,
    ) -> Any:
        timeouts = dict(
            read_timeout=read_timeout, write_timeout=write_timeout, socket_settings=socket_settings
        )
        if ssl:
            return super().Transport(host, connect_timeout, ssl, **timeouts, **kwargs)
        return self.buffered(host, connect_timeout=connect_timeout, **timeouts, **kwargs)

    def connect(self, callback: Any = None) -> Any:
        # Channels whose delivery py-amqp's frame reader holds partly (see _read_frame).
        self._partial: set[int] = set()
        return super().connect(callback)

    def blocking_read(self, timeout: float | None = None) -> Any:
        transport = self.transport
        if not isinstance(transport, BufferedTCPTransport):
            return super().blocking_read(timeout)
        if not transport.has_frame():
            # A frame already read needs neither the socket nor its timeout
            # switched back and forth (two system calls per frame in py-amqp).
            with transport.having_timeout(timeout):
                transport.fill()
        located = transport.buffered_delivery()
        if located is not None and self._deliver(transport, located):
            return True
        return self._read_frame(transport.read_frame())

    def _deliver(self, transport: BufferedTCPTransport, located: Located) -> bool:
        """Hand a delivery whose frames are all buffered to its channel at once; False if
        py-amqp must take it frame by frame (its reader is midway through another on
        that channel, the channel is closing, or a reply to a Deliver is awaited)."""
        channel_id = located[0]
        if self._partial and channel_id in self._partial:
            return False
        channels = self.channels
        if channels is None:
            raise RecoverableConnectionError("Connection already closed")
        channel = channels[channel_id]
        if channel.is_closing or spec.Basic.Deliver in channel._pending:
            return False
        buffer = transport.take(located[-1])
        self.bytes_recv += 3  # one per frame, as py-amqp counts them for heartbeats
        amqp_delivery.deliver(channel, buffer, located)
        return True

    def _read_frame(self, frame: Frame) -> Any:
        done = self.on_inbound_frame(frame)
        if done:
            self._partial.discard(frame[1])
        elif frame[0] == amqp_delivery.METHOD:
            self._partial.add(frame[1])  # a message's method frame: its content follows
        return done


class Transport(pyamqp.Transport):  # type: ignore[misc]
    """kombu's py-amqp transport, reading a burst of messages per turn of the loop.

    Celery's loop polls the socket, which says nothing of frames already in the
    buffer: the reader stops only once none is whole there, and a check before
    each poll takes those a blocking read (a `basic.qos`, a consume) left behind.
    """

    Connection = Connection

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        transport = connection.transport
        if not isinstance(transport, BufferedTCPTransport):
            return

        def read_buffered() -> None:
            if connection.transport is not transport or not transport.connected:
                loop.on_tick.discard(read_buffered)  # a connection of the past
            elif transport.has_frame():
                self.on_readable(connection, loop)

        loop.on_tick.add(read_buffered)

    def _make_reader(
        self,
        connection: Any,
        timeout: type[BaseException] = socket.timeout,
        error: type[BaseException] = OSError,
        _unavail: tuple[int, ...] = (errno.EAGAIN, errno.EINTR),
    ) -> Callable[[Any], None]:
        drain_events = connection.drain_events

        def _read(loop: Any) -> None:
            if not connection.connected:
                raise RecoverableConnectionError("Socket was disconnected")
            transport = connection.transport
            buffered = transport.has_frame if isinstance(transport, BufferedTCPTransport) else None
            with gathered_wakes():
                try:
                    read = 0
                    while read < BURST or (buffered is not None and buffered()):
                        drain_events(timeout=0)
                        read += 1
                except timeout:
                    return
                except error as exc:
                    if getattr(exc, "errno", None) in _unavail:
                        return
                    raise
            loop.call_soon(_read, loop)  # more may be waiting: after the other work due

        return _read
