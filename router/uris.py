"""The router's own denials under tidings' URIs: browsers never see `wamp.error.*` for them.

Crossbar hard-codes `wamp.error.not_authorized` for denied actions; the
router process (and only it: the router-side components install this)
reports them as `tidings.error.not_authorized` instead.
"""

from __future__ import annotations

from autobahn.wamp.exception import ApplicationError

from tidings.errors import AUTHORIZATION_FAILED, NOT_AUTHORIZED


def install() -> None:
    """Make the router's denials carry tidings' URIs; idempotent."""
    ApplicationError.NOT_AUTHORIZED = NOT_AUTHORIZED  # type: ignore[misc]
    ApplicationError.AUTHORIZATION_FAILED = AUTHORIZATION_FAILED  # type: ignore[misc]
