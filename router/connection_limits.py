"""How long and how many: a connection must sign in within seconds, send its request
headers within seconds, and one address holds at most so many WebSocket connections.

Wired into Crossbar and Twisted by router.guards.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import txaio

from router import session_limits
from tidings.settings import Limits

log = txaio.make_logger()  # type: ignore[attr-defined]

_LOOPBACK = ("127.", "::1", "::ffff:127.")
_per_address: Counter[str] = Counter()


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# -- WAMP sessions ------------------------------------------------------------------
def opened(limits: Limits, session: Any, transport: Any) -> None:
    """A transport opened for a session: a deadline for HELLO, and the address counted."""
    session._tidings_hello = _reactor().callLater(limits.hello_timeout, _hello_due, session)
    address = address_of(transport) if limits.connections_per_address else None
    session._tidings_address = address
    if address is None:
        return
    _per_address[address] += 1
    if _per_address[address] > limits.connections_per_address:
        log.warn("refusing a connection from {address}: too many", address=address)
        close(transport, "too many connections from this address")


def closed(session: Any) -> None:
    due = getattr(session, "_tidings_hello", None)
    if due is not None and due.active():
        due.cancel()
    address = getattr(session, "_tidings_address", None)
    if address is not None:
        session._tidings_address = None
        _per_address[address] -= 1
        if _per_address[address] <= 0:
            del _per_address[address]
            session_limits.forget_address(address)


def _hello_due(session: Any) -> None:
    if session._session_id is None and session._transport is not None:
        log.info("closing a connection that did not sign in in time")
        close(session._transport, "no session joined in time")


def address_of(transport: Any) -> str | None:
    """The browser's address: the peer's, or behind a reverse proxy on this host (a
    loopback peer) the last address it put in X-Forwarded-For. None: not limited
    (a WebSocket from loopback without that header is a local tool; RawSocket is
    the backend's)."""
    headers = getattr(transport, "http_headers", None)
    if not isinstance(headers, dict):
        return None
    peer = transport.transport.getPeer()
    host = str(getattr(peer, "host", ""))
    if not host.startswith(_LOOPBACK):
        return host
    forwarded = headers.get("x-forwarded-for", "")
    return forwarded.split(",")[-1].strip() or None


def close(transport: Any, reason: str) -> None:
    try:
        if hasattr(transport, "sendClose"):
            transport.sendClose(code=4008, reason=reason)  # 4000+: the application's
        else:
            transport.transport.abortConnection()
    except Exception:
        transport.transport.abortConnection()


# -- HTTP, before a WebSocket ---------------------------------------------------------
def http_connected(limits: Limits, channel: Any) -> None:
    """An HTTP connection, or one kept alive for its next request: the request's
    headers must be in within the deadline (`client_timeout` only closes a
    connection that sends nothing, not one that drips)."""
    channel._tidings_headers_in = False
    channel._tidings_request_due = _reactor().callLater(
        limits.request_timeout, _request_due, channel
    )


def http_headers_in(channel: Any) -> None:
    channel._tidings_headers_in = True
    due = getattr(channel, "_tidings_request_due", None)
    if due is not None and due.active():
        due.cancel()


def _request_due(channel: Any) -> None:
    transport = getattr(channel, "transport", None)
    if not channel._tidings_headers_in and transport is not None:
        log.info("closing a connection whose request did not come in time")
        transport.abortConnection()
