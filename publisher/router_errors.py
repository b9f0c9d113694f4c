"""Router-side error URIs: what browsers see when the router says no.

Crossbar hard-codes `wamp.error.not_authorized` for denied actions. Browsers
of tidings only ever see `tidings.error.*`, so the router process (and only
it: this module is imported by the router-side components) reports denials
under tidings' own URI.
"""

from __future__ import annotations

from autobahn.wamp.exception import ApplicationError

NOT_AUTHORIZED = "tidings.error.not_authorized"
AUTHORIZATION_FAILED = "tidings.error.authorization_failed"


def install() -> None:
    """Make the router's denials carry tidings' URIs; idempotent."""
    ApplicationError.NOT_AUTHORIZED = NOT_AUTHORIZED  # type: ignore[misc]
    ApplicationError.AUTHORIZATION_FAILED = AUTHORIZATION_FAILED  # type: ignore[misc]
