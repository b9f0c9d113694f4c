"""The router's WAMP-Ticket authenticator: a browser's JWT becomes its authid and permissions.

Loaded in-process by the router as a "function" authenticator (see
.crossbar/config.json), so there is no registration race at start-up and no
internal procedure URI for a client to see.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from autobahn.wamp.exception import ApplicationError

from publisher import tickets
from publisher.jti_store import make_store
from tidings.settings import FRONTEND_ROLE, REALM, settings

log = logging.getLogger(__name__)

Authenticate = Callable[[str, str | None, dict[str, Any]], dict[str, Any]]

# The error URIs a browser may see; never an internal one.
ERRORS = {
    "malformed": "tidings.error.invalid_ticket",
    "invalid": "tidings.error.invalid_ticket",
    "expired": "tidings.error.ticket_expired",
    "replayed": "tidings.error.ticket_used",
}


def create_authenticator(config: dict[str, Any], controller: Any = None) -> Authenticate:
    """Called once by the router; fails the router's start when the secret is missing."""
    current = settings()
    secret = current.require_secret()
    used = make_store(current.redis_url)

    def authenticate(realm: str, authid: str | None, details: dict[str, Any]) -> dict[str, Any]:
        if realm != REALM:
            raise ApplicationError("tidings.error.no_such_realm", f"unknown realm {realm!r}")
        try:
            claims = tickets.verify(details.get("ticket"), secret, used)
        except tickets.TicketError as exc:
            log.info("ticket refused: %s", exc)
            raise ApplicationError(ERRORS[exc.reason], str(exc)) from None
        except Exception:
            # e.g. Redis unreachable: refuse, and say so without internals.
            log.exception("ticket check failed")
            raise ApplicationError(
                "tidings.error.unavailable", "tickets cannot be checked right now; try again"
            ) from None
        if authid is not None and authid != claims.user:
            raise ApplicationError(
                "tidings.error.invalid_ticket", "the authid does not match the ticket's user"
            )
        return {
            "realm": REALM,
            "authid": claims.user,
            "role": FRONTEND_ROLE,
            "extra": {"perms": list(claims.perms)},
        }

    return authenticate
