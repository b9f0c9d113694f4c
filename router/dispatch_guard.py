"""Inside the router: a receiver whose connection was just dropped must not cost others an event.

When the router drops a WebSocket itself (a browser that stopped reading
and missed its auto-ping, a handshake timeout), the protocol is closed at
once but the session is detached only a moment later. An event dispatched
in between raises `Disconnected` for that receiver inside Crossbar's
dispatch loop, which then stops: every subscriber after it in the loop
misses the event, though its publisher already got the acknowledgement
(crossbar#1717). Skipping the closed receiver keeps the loop going.
"""

from __future__ import annotations

from typing import Any

import txaio

log = txaio.make_logger()  # type: ignore[attr-defined]
_installed = False


def install() -> None:
    """Make the router skip a receiver whose connection is already closed; idempotent."""
    global _installed
    if _installed:
        return
    from autobahn.exception import Disconnected
    from crossbar.router.router import Router

    send = Router.send

    def send_or_skip(self: Any, session: Any, msg: Any) -> None:
        try:
            send(self, session, msg)
        except Disconnected:
            # Its session is about to be detached; it reconnects and recovers
            # through the history like any browser that was away.
            log.debug(
                "skipped {msg} to session {session}: its connection is closed",
                msg=type(msg).__name__,
                session=getattr(session, "_session_id", None),
            )

    Router.send = send_or_skip  # type: ignore[method-assign]
    _installed = True
