"""The router's dynamic authorizer for browsers: least privilege on every topic and procedure.

Registered as `tidings.authorize` by a backend component the router starts
(.crossbar/config.json); the `frontend` role names it as its authorizer.
Everything not allowed by `tidings.access` is denied.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from autobahn.twisted.wamp import ApplicationSession

from router import guards, logs, meters, uris
from tidings import access, catalogue
from tidings.catalogue import AUTHENTICATED
from tidings.names import AUTHORIZE_PROCEDURE, FRONTEND_ROLE
from tidings.settings import Settings

log = logging.getLogger(__name__)

# The router caches a decision by realm, role, URI and action: not by user,
# and not by match policy, so a cached "allow" of an exact subscription would
# also allow a prefix one of the same string. Only the answer for procedures
# every signed-in user may call is cached: declared URIs, the same for
# everyone. Nothing decided for an arbitrary URI, or by a permission, is kept.
_DENY = {"allow": False, "disclose": False, "cache": False}
_ALLOW = {"allow": True, "disclose": False, "cache": False}
# Procedures check the caller themselves (history, editors, an application's
# own), so the router must tell them who calls: disclosure is decided here,
# by the caller's authorization, not by the callee's role.
_CALL_FOR_EVERYONE = {"allow": True, "disclose": True, "cache": True}
_CALL_BY_PERMISSION = {"allow": True, "disclose": True, "cache": False}


def authorize(session: dict[str, Any], uri: str, action: str, options: dict[str, Any]) -> dict:
    """Crossbar's authorizer signature: may this browser session do `action` on `uri`?"""
    if session.get("authrole") != FRONTEND_ROLE:
        return _DENY
    user = str(session.get("authid") or "")
    extra = session.get("authextra") or {}
    perms = extra.get("perms") or [] if isinstance(extra, dict) else []
    if action == "subscribe":
        match = (options or {}).get("match", "exact")
        if match == "exact":
            return _ALLOW if access.may_subscribe(user, perms, uri) else _DENY
        if match == "prefix":
            return _ALLOW if access.may_subscribe_prefix(user, perms, uri) else _DENY
        if match == "wildcard":
            return _ALLOW if access.may_subscribe_wildcard(user, perms, uri) else _DENY
        return _DENY
    if action == "call":
        declared = catalogue.procedure(uri)
        if declared is None or not declared.allows(perms):
            return _DENY
        return _CALL_FOR_EVERYONE if declared.permission == AUTHENTICATED else _CALL_BY_PERMISSION
    # Browsers never publish and never register (router.guards refuses both earlier).
    return _DENY


class Authorizer(ApplicationSession):  # type: ignore[misc]
    """Registers the authorizer procedure on the realm and puts the router's limits in place;
    started by the router before any transport opens."""

    def onJoin(self, details: Any) -> Any:
        settings = Settings.from_environ(os.environ)
        catalogue.current()  # a wrong entry stops the router here, with one line
        logs.install()
        uris.install()
        guards.install(settings.limits)
        if settings.dev:
            self.log.warn(
                "TIDINGS_DEV=1: development mode, with built-in secrets where none are set "
                "and demo tickets at /dev; never let browsers of the world reach this router"
            )
        # Embedded in the router, this session's transport holds Crossbar's router.
        meters.saw_router(getattr(self._transport, "_router", None))
        meters.serve(settings.router_metrics_port)
        registered = self.register(authorize, AUTHORIZE_PROCEDURE)
        registered.addCallback(lambda _: meters.ready("authorizer"))
        return registered

    def onLeave(self, details: Any) -> None:
        meters.ready("authorizer", "left the realm")
        super().onLeave(details)
