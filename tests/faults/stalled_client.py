"""A WAMP-over-WebSocket client on a bare socket that subscribes, then stops reading it."""

from __future__ import annotations

from harness.raw_wamp import RawWamp

SUBSCRIBE, SUBSCRIBED = 32, 33


class StalledSubscriber:
    """Joins with a ticket and subscribes, then never reads its socket again.

    A library client always drains its socket on a thread; this one does the
    handshake by hand so that, once subscribed, nothing reads: the kernel
    buffers fill and the router must keep or drop what it cannot send. A small
    receive buffer makes that happen after a few kilobytes, not megabytes.
    """

    def __init__(self, url: str, user: str, topic: str, perms: list[str] | None = None) -> None:
        self.client = RawWamp(url, rcvbuf=4096)
        self.user = user
        self.topic = topic
        self.perms = perms or []

    def start(self, timeout: float = 10) -> StalledSubscriber:
        self.client.open(timeout)
        self.client.join(self.user, self.perms)
        self.client.send([SUBSCRIBE, 1, {}, self.topic])
        subscribed = self.client.read(timeout)
        if subscribed[0] != SUBSCRIBED:
            raise RuntimeError(f"expected SUBSCRIBED, got {subscribed}")
        return self

    @property
    def local_port(self) -> int:
        """The client's port: the router's side of the connection is found by it."""
        assert self.client.sock is not None
        return int(self.client.sock.getsockname()[1])

    def close(self) -> None:
        self.client.close()
