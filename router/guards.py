"""What Crossbar leaves unbounded, bounded: the limits every browser session lives within.

Installed once into the router process (by the authorizer component) around
the router's own message paths; these are Crossbar internals, each named by
a test in tests/unit/test_contracts.py so that an upgrade that moves one
fails there first.

- `Router.process`, every message a session sends: browsers never publish or
  register; URIs are at most `uri_bytes`; a session holds at most
  `subscriptions`; calls are rate-limited per session and at most
  `calls_in_flight` wait for an answer. A refusal is a WAMP ERROR with a
  `tidings.error.*` URI, and nothing is kept of what was refused.
- `Router.send`, every message to a session: a browser whose unsent output
  passes `unsent_bytes` (it stopped reading) is dropped instead of growing the
  router's memory; a receiver whose connection is already closed is skipped,
  so that the others still get the event (crossbar#1717).
- `RouterSession.onOpen`/`onClose`: a connection without a joined session
  after `hello_timeout` is closed; at most `connections_per_address`
  WebSocket connections per address.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections import Counter
from typing import Any

import txaio
from autobahn.exception import Disconnected
from autobahn.wamp import message

from tidings.errors import INVALID_ARGUMENT, LIMIT_EXCEEDED, NOT_AUTHORIZED, RATE_LIMITED
from tidings.names import FRONTEND_ROLE
from tidings.settings import Limits

log = txaio.make_logger()  # type: ignore[attr-defined]

_installed: Limits | None = None
_LOOPBACK = ("127.", "::1", "::ffff:127.")


class _Browser:
    """What the guards keep per browser session."""

    __slots__ = ("calls", "dropped", "stamp", "tokens")

    def __init__(self, burst: float) -> None:
        self.calls: set[int] = set()
        self.tokens = burst
        self.stamp = time.monotonic()
        self.dropped = False


_browsers: weakref.WeakKeyDictionary[Any, _Browser] = weakref.WeakKeyDictionary()
_per_address: Counter[str] = Counter()


def install(limits: Limits) -> None:
    """Put the limits around the router's message paths; once per process."""
    global _installed
    if _installed is not None:
        return
    from crossbar.router.router import Router
    from crossbar.router.session import RouterSession

    process, send = Router.process, Router.send
    on_open, on_close = RouterSession.onOpen, RouterSession.onClose

    def guarded_process(self: Any, session: Any, msg: Any) -> None:
        if getattr(session, "_authrole", None) == FRONTEND_ROLE:
            refusal = _refusal(limits, self, session, msg)
            if refusal is not None:
                _refuse(send, self, session, msg, *refusal)
                return
        process(self, session, msg)

    def guarded_send(self: Any, session: Any, msg: Any) -> None:
        try:
            send(self, session, msg)
        except Disconnected:
            # Its session is about to be detached; it reconnects and recovers
            # through the history like any browser that was away.
            log.debug("skipped a message to a closed connection")
            return
        if getattr(session, "_authrole", None) == FRONTEND_ROLE:
            _answered(session, msg)
            _bound_unsent(limits, session)

    def guarded_open(self: Any, transport: Any) -> None:
        on_open(self, transport)
        _on_open(limits, self, transport)

    def guarded_close(self: Any, was_clean: bool) -> None:
        _on_close(self)
        on_close(self, was_clean)

    Router.process = guarded_process  # type: ignore[method-assign]
    Router.send = guarded_send  # type: ignore[method-assign]
    RouterSession.onOpen = guarded_open  # type: ignore[method-assign]
    RouterSession.onClose = guarded_close  # type: ignore[method-assign]
    _installed = limits


# -- what a browser sends ------------------------------------------------------
def _refusal(limits: Limits, router: Any, session: Any, msg: Any) -> tuple[str, str] | None:
    kind = type(msg)
    if kind is message.Publish or kind is message.Register:
        return NOT_AUTHORIZED, "browsers do not publish or register"
    uri = getattr(msg, "topic", None) or getattr(msg, "procedure", None)
    if isinstance(uri, str) and len(uri.encode()) > limits.uri_bytes:
        return INVALID_ARGUMENT, f"URIs are at most {limits.uri_bytes} bytes"
    if kind is message.Subscribe:
        held = router._broker._session_to_subscriptions.get(session, ())
        if len(held) >= limits.subscriptions:
            return LIMIT_EXCEEDED, f"at most {limits.subscriptions} subscriptions per session"
    elif kind is message.Call:
        return _call_refusal(limits, session, msg)
    return None


def _call_refusal(limits: Limits, session: Any, call: Any) -> tuple[str, str] | None:
    burst = 2 * limits.call_rate
    browser = _browsers.get(session)
    if browser is None:
        browser = _browsers[session] = _Browser(burst)
    if len(browser.calls) >= limits.calls_in_flight:
        return RATE_LIMITED, f"at most {limits.calls_in_flight} calls waiting for an answer"
    now = time.monotonic()
    browser.tokens = min(burst, browser.tokens + (now - browser.stamp) * limits.call_rate)
    browser.stamp = now
    if browser.tokens < 1:
        return RATE_LIMITED, f"at most {limits.call_rate:g} calls per second"
    browser.tokens -= 1
    browser.calls.add(call.request)
    return None


def _refuse(send: Any, router: Any, session: Any, msg: Any, uri: str, why: str) -> None:
    if type(msg) is message.Publish and not msg.acknowledge:
        return  # WAMP answers an unacknowledged publish with nothing, refused or not
    with contextlib.suppress(Disconnected):
        send(router, session, message.Error(msg.MESSAGE_TYPE, msg.request, uri, args=[why]))


def _answered(session: Any, msg: Any) -> None:
    kind = type(msg)
    if kind is message.Result or (
        kind is message.Error and msg.request_type == message.Call.MESSAGE_TYPE
    ):
        browser = _browsers.get(session)
        if browser is not None:
            browser.calls.discard(msg.request)


def _bound_unsent(limits: Limits, session: Any) -> None:
    tcp: Any = getattr(session._transport, "transport", None)
    buffered = getattr(tcp, "dataBuffer", None)
    if buffered is None:
        return  # not a plain TCP transport (TLS in the router): not measured
    unsent = len(buffered) - tcp.offset + tcp._tempDataLen
    if unsent <= limits.unsent_bytes:
        return
    browser = _browsers.get(session)
    if browser is None:
        browser = _browsers[session] = _Browser(2 * limits.call_rate)
    if browser.dropped:
        return
    browser.dropped = True
    log.warn(
        "dropping session {session} of {authid}: {unsent} bytes it does not read",
        session=session._session_id,
        authid=session._authid,
        unsent=unsent,
    )
    tcp.abortConnection()


# -- connections -----------------------------------------------------------------
def _on_open(limits: Limits, session: Any, transport: Any) -> None:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    session._tidings_hello = reactor.callLater(limits.hello_timeout, _hello_due, session)
    address = _address(transport) if limits.connections_per_address else None
    session._tidings_address = address
    if address is None:
        return
    _per_address[address] += 1
    if _per_address[address] > limits.connections_per_address:
        log.warn("refusing a connection from {address}: too many", address=address)
        _close(transport, "too many connections from this address")


def _on_close(session: Any) -> None:
    due = getattr(session, "_tidings_hello", None)
    if due is not None and due.active():
        due.cancel()
    address = getattr(session, "_tidings_address", None)
    if address is not None:
        session._tidings_address = None
        _per_address[address] -= 1
        if _per_address[address] <= 0:
            del _per_address[address]


def _hello_due(session: Any) -> None:
    if session._session_id is None and session._transport is not None:
        log.info("closing a connection that did not sign in in time")
        _close(session._transport, "no session joined in time")


def _address(transport: Any) -> str | None:
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


def _close(transport: Any, reason: str) -> None:
    try:
        if hasattr(transport, "sendClose"):
            transport.sendClose(code=4008, reason=reason)  # 4000+: the application's
        else:
            transport.transport.abortConnection()
    except Exception:
        transport.transport.abortConnection()
