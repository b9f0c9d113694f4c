"""The bench's producer link to RabbitMQ: messages are written a batch at a time, not one each.

The senders stand in for applications, whose cost is theirs, not tidings':
on two cores every microsecond the producer spends is taken from what is
measured. py-amqp writes each message with its own system call and, before
each, reads the socket for a `connection.blocked` notice; this link
queues the frames until `flush()` and never asks to be told of blocking
(RabbitMQ then just stops reading, which the bench's window absorbs).
"""

from __future__ import annotations

from typing import Any, ClassVar

from kombu import Connection

from workers import amqp_transport


class _CorkedTransport(amqp_transport.BufferedTCPTransport):
    """Once corked, holds what is written until `flush()`; reads as its parent."""

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._held: list[bytes] | None = None

    def cork(self) -> None:
        if self._held is None:
            self._held = []

    def write(self, data: Any) -> None:
        if self._held is None:
            super().write(data)
        else:
            # py-amqp hands over a view of a buffer it reuses: keep a copy.
            self._held.append(bytes(data))

    def flush(self, cork: bool = True) -> None:
        """Write what is held; go on holding unless `cork` is False."""
        held, self._held = self._held, ([] if cork else None)
        if held:
            super().write(b"".join(held))


class _Connection(amqp_transport.Connection):
    buffered = _CorkedTransport
    # Not asking for `connection.blocked` spares a read of the socket before each publish.
    negotiate_capabilities: ClassVar[dict[str, bool]] = {
        **amqp_transport.Connection.negotiate_capabilities,
        "connection.blocked": False,
    }


class _Transport(amqp_transport.Transport):
    Connection = _Connection


class Wire:
    """A channel to RabbitMQ whose publishes go out at `flush()`, in one write."""

    def __init__(self, broker_url: str) -> None:
        self.connection = Connection(broker_url, transport=_Transport)
        self.channel = self.connection.default_channel
        self._transport: _CorkedTransport = self.connection.connection.transport
        self._transport.cork()  # set up: from now on only publishes are written

    def publish(self, message: Any, exchange: str, routing_key: str) -> None:
        self.channel.basic_publish(message, exchange=exchange, routing_key=routing_key)

    def flush(self) -> None:
        self._transport.flush()

    def close(self) -> None:
        try:
            self._transport.flush(cork=False)  # closing waits for the broker's answer
        finally:
            self.connection.release()
