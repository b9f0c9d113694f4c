"""What browsers are told: `tidings.error.*` URIs only, and nothing about the router inside.

Crossbar answers some mistakes with its own `wamp.error.*` URIs and its own
wording (an unknown subscription id, a malformed URI, a HELLO without a
ticket), names the callee of every call result, and tells every session the
router's host name and process id. For browser sessions these are rewritten
here (wired in by router.guards); backends see them as they are.
"""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message

from tidings.errors import INTERNAL, INVALID_ARGUMENT, INVALID_TICKET, NO_SUCH_REALM, UNAVAILABLE

# Crossbar's URIs → tidings', with the words a browser gets instead of Crossbar's.
_ERRORS = {
    "wamp.error.invalid_uri": (INVALID_ARGUMENT, "not a valid URI"),
    "wamp.error.invalid_argument": (INVALID_ARGUMENT, "the arguments are not valid"),
    "wamp.error.no_such_subscription": (INVALID_ARGUMENT, "no such subscription"),
    "wamp.error.no_such_registration": (INVALID_ARGUMENT, "no such registration"),
    "wamp.error.no_such_procedure": (UNAVAILABLE, "not available right now; try again"),
    "wamp.error.canceled": (UNAVAILABLE, "the call was canceled"),
    "wamp.error.timeout": (UNAVAILABLE, "no answer in time; try again"),
    "wamp.error.no_auth_method": (INVALID_TICKET, "sign in with a ticket (WAMP-Ticket)"),
    "wamp.error.no_such_realm": (NO_SUCH_REALM, "no such realm"),
}
_OTHER = (INTERNAL, "the router could not do that")


def for_browser(msg: Any) -> Any:
    """The message as a browser may see it (changed in place)."""
    kind = type(msg)
    if kind is message.Error and msg.error.startswith("wamp."):
        msg.error, text = _ERRORS.get(msg.error, _OTHER)
        msg.args, msg.kwargs = [text], None
    elif kind is message.Result:
        # Crossbar discloses every callee (session, authid, role): not a browser's business.
        msg.callee = msg.callee_authid = msg.callee_authrole = None
    elif kind is message.Event:
        # Who published (a backend session's id) is not a browser's business either.
        msg.publisher = msg.publisher_authid = msg.publisher_authrole = None
    elif kind is message.Abort and msg.reason.startswith("wamp."):
        msg.reason, msg.message = _ERRORS.get(msg.reason, _OTHER)
    elif kind is message.Welcome:
        # Crossbar adds its host name, worker, process id and the peer: the
        # browser needs none of it, an attacker would like all of it.
        msg.custom = {}
        if msg.authextra:
            msg.authextra = {k: v for k, v in msg.authextra.items() if not k.startswith("x_cb_")}
    return msg
