"""What Crossbar leaves unbounded, bounded: the limits every browser session lives within.

Installed once into the router process (by the authorizer component) around
Crossbar's and Twisted's own paths; these are internals, each named by a test
in tests/unit/test_contracts.py, so that an upgrade that moves one fails
there first:

- `Router.process`, every message a browser sends: router.session_limits
  (a message rate, no publish or register, URI size and syntax, subscriptions
  held, a call rate and calls waiting); a refusal is a WAMP ERROR with a
  `tidings.error.*` URI, and nothing is kept of what was refused.
- `Router.send`, every message to a browser: an answered call no longer waits;
  a browser whose unsent output passes `unsent_bytes` is dropped; a receiver
  whose connection is already closed is skipped, so that the others still get
  the event (crossbar#1717).
- The browser's WebSocket `send`: router.outgoing (`tidings.error.*` only,
  no callee or publisher details).
- `RouterApplicationSession.send`: the router-side components are not sent
  INTERRUPT (a caller gone mid-call), which Crossbar's in-router sessions
  cannot take: the caller's session would never be detached.
- `RouterSession.onOpen`/`onClose` and Twisted's `HTTPChannel`
  (`connectionMade`, `allHeadersReceived`, `requestDone`):
  router.connection_limits (a deadline for HELLO and for request headers,
  connections per address).
"""

from __future__ import annotations

import contextlib
from typing import Any

import txaio
from autobahn.exception import Disconnected
from autobahn.wamp import message

from router import connection_limits, outgoing, session_limits
from tidings.names import FRONTEND_ROLE
from tidings.settings import Limits

log = txaio.make_logger()  # type: ignore[attr-defined]

_installed: Limits | None = None


def install(limits: Limits) -> None:
    """Put the limits around the router's paths; once per process."""
    global _installed
    if _installed is not None:
        return
    _wrap_router(limits)
    _wrap_sessions(limits)
    _wrap_http(limits)
    _installed = limits


def _browser(session: Any) -> bool:
    return getattr(session, "_authrole", None) == FRONTEND_ROLE


def _wrap_router(limits: Limits) -> None:
    from crossbar.router.router import Router

    process, send = Router.process, Router.send

    def guarded_process(self: Any, session: Any, msg: Any) -> None:
        if _browser(session):
            if session_limits.is_dropped(session):
                return
            refused = session_limits.refusal(limits, self, session, msg)
            if refused is not None:
                session_limits.refused(limits, session)
                _refuse(send, self, session, msg, *refused)
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
        if _browser(session):
            session_limits.answered(limits, session, msg)
            session_limits.bound_unsent(limits, session)

    Router.process = guarded_process  # type: ignore[method-assign]
    Router.send = guarded_send  # type: ignore[method-assign]


def _refuse(send: Any, router: Any, session: Any, msg: Any, uri: str, why: str) -> None:
    request = getattr(msg, "request", None)
    if request is None or (type(msg) is message.Publish and not msg.acknowledge):
        return  # WAMP answers these with nothing, refused or not
    with contextlib.suppress(Disconnected):
        send(router, session, message.Error(msg.MESSAGE_TYPE, request, uri, args=[why]))


def _wrap_sessions(limits: Limits) -> None:
    from crossbar.router.protocol import WampWebSocketServerProtocol
    from crossbar.router.session import RouterApplicationSession, RouterSession

    app_send = RouterApplicationSession.send

    def component_send(self: Any, msg: Any) -> None:
        # A caller that leaves while a router-side component is answering makes the
        # dealer send INTERRUPT, which Crossbar's in-router sessions do not know: the
        # raise aborted the caller's detach, and its session stayed in the router's
        # tables for good. The answer, when it comes, finds no caller and is dropped.
        if type(msg) is message.Interrupt:
            return
        app_send(self, msg)

    RouterApplicationSession.send = component_send  # type: ignore[method-assign]

    on_open, on_close = RouterSession.onOpen, RouterSession.onClose
    ws_send = WampWebSocketServerProtocol.send

    def guarded_open(self: Any, transport: Any) -> None:
        on_open(self, transport)
        connection_limits.opened(limits, self, transport)

    def guarded_close(self: Any, was_clean: bool) -> None:
        connection_limits.closed(self)
        on_close(self, was_clean)

    def browser_send(self: Any, msg: Any) -> None:
        # Everything the router sends on a WebSocket: browsers' connections.
        ws_send(self, outgoing.for_browser(msg))

    RouterSession.onOpen = guarded_open  # type: ignore[method-assign]
    RouterSession.onClose = guarded_close  # type: ignore[method-assign]
    WampWebSocketServerProtocol.send = browser_send  # type: ignore[method-assign]


def _wrap_http(limits: Limits) -> None:
    from twisted.web.http import HTTPChannel

    connected, headers_in = HTTPChannel.connectionMade, HTTPChannel.allHeadersReceived
    request_done = HTTPChannel.requestDone

    def guarded_connected(self: Any) -> None:
        connected(self)
        connection_limits.http_connected(limits, self)

    def guarded_headers_in(self: Any) -> None:
        connection_limits.http_headers_in(self)
        headers_in(self)

    def guarded_request_done(self: Any, request: Any) -> None:
        request_done(self, request)
        if self.persistent:  # kept alive: the next request has the same deadline
            connection_limits.http_connected(limits, self)

    HTTPChannel.connectionMade = guarded_connected  # type: ignore[method-assign]
    HTTPChannel.requestDone = guarded_request_done  # type: ignore[method-assign]
    HTTPChannel.allHeadersReceived = guarded_headers_in  # type: ignore[method-assign]
