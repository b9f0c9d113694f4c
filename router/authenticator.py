"""The router's WAMP-Ticket authenticator: a browser's JWT becomes its authid and permissions.

Loaded in-process by the router as a "function" authenticator (see
.crossbar/config.json), so there is no registration race at start-up and no
internal procedure URI for a client to see.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet.threads import deferToThread

from router import logs, meters
from stores.jti import make_store
from tidings import catalogue, tickets
from tidings.errors import NO_SUCH_REALM, TicketError, Unavailable
from tidings.names import FRONTEND_ROLE, REALM
from tidings.settings import Settings

log = logging.getLogger(__name__)

# TicketError.reason -> the result counted (router.meters.AUTH_RESULTS).
_RESULTS = {"malformed": "invalid", "invalid": "invalid", "expired": "expired", "replayed": "used"}

Authenticate = Callable[[str, str | None, dict[str, Any]], Any]


def create_authenticator(config: dict[str, Any], controller: Any = None) -> Authenticate:
    """Called once by the router; fails the router's start when the secret is missing."""
    settings = Settings.from_environ(os.environ)
    logs.install()
    secret = settings.require_secret()
    catalogue.current()  # a wrong entry stops the router here, with one line
    used = make_store(settings.redis_url)

    def check(realm: str, authid: str | None, details: dict[str, Any]) -> dict[str, Any]:
        if realm != REALM:
            raise ApplicationError(NO_SUCH_REALM, f"unknown realm {realm!r}")
        try:
            claims = tickets.verify(details.get("ticket"), secret, used)
        except TicketError as exc:
            result = _RESULTS.get(exc.reason, "invalid")
            log.info("ticket refused: %s", exc, extra={"reason": result})
            meters.count("auth", result)
            raise ApplicationError(exc.uri, str(exc)) from None
        except Exception:
            # e.g. Redis unreachable: refuse, and say so without internals.
            log.exception("ticket check failed")
            meters.count("auth", "unavailable")
            raise ApplicationError(
                Unavailable.uri, "tickets cannot be checked right now; try again"
            ) from None
        if authid is not None and authid != claims.user:
            meters.count("auth", "invalid")
            raise ApplicationError(
                TicketError.URIS["invalid"], "the authid does not match the ticket's user"
            )
        meters.count("auth", "ok")
        return {
            "realm": REALM,
            "authid": claims.user,
            "role": FRONTEND_ROLE,
            "extra": {"perms": list(claims.perms)},
        }

    if not used.blocking:
        return check

    def authenticate(realm: str, authid: str | None, details: dict[str, Any]) -> Any:
        # A store over the network (Redis) answers in a thread: the router's
        # event loop serves every other session meanwhile.
        return deferToThread(check, realm, authid, details)

    return authenticate
