"""Every error of tidings: one base class, a branch for "try again" and one for "refused".

Callers decide by class, never by message: a `Transient` error may succeed
when tried again (a timeout, a lost connection, a store that is down); a
`Refused` one never will (invalid input, a missing permission, a router that
said no). Each error carries the `tidings.error.*` URI a browser sees for it;
browsers never see any other.
"""

from __future__ import annotations

from typing import ClassVar

# The URIs browsers may receive, all of them.
NOT_AUTHORIZED = "tidings.error.not_authorized"
AUTHORIZATION_FAILED = "tidings.error.authorization_failed"
INVALID_ARGUMENT = "tidings.error.invalid_argument"
INVALID_TICKET = "tidings.error.invalid_ticket"
TICKET_EXPIRED = "tidings.error.ticket_expired"
TICKET_USED = "tidings.error.ticket_used"
NO_SUCH_REALM = "tidings.error.no_such_realm"
HISTORY_GAP = "tidings.error.history_gap"
UNAVAILABLE = "tidings.error.unavailable"
RATE_LIMITED = "tidings.error.rate_limited"
LIMIT_EXCEEDED = "tidings.error.limit_exceeded"
INTERNAL = "tidings.error.internal"

URIS = frozenset(
    {
        NOT_AUTHORIZED,
        AUTHORIZATION_FAILED,
        INVALID_ARGUMENT,
        INVALID_TICKET,
        TICKET_EXPIRED,
        TICKET_USED,
        NO_SUCH_REALM,
        HISTORY_GAP,
        UNAVAILABLE,
        RATE_LIMITED,
        LIMIT_EXCEEDED,
        INTERNAL,
    }
)


class TidingsError(Exception):
    """Something tidings could not do; `uri` is what a browser is told."""

    uri = INTERNAL


class Transient(TidingsError):
    """May succeed when tried again: a timeout, a lost connection, a store that is down."""

    uri = UNAVAILABLE


class Refused(TidingsError):
    """Will fail however often it is tried: the input or a permission is at fault."""

    uri = INVALID_ARGUMENT


class ConfigError(TidingsError):
    """A setting is missing or wrong; the message says which and what to do."""


class InvalidArgument(Refused):
    """An argument from a caller is not acceptable."""


class NotAuthorized(Refused):
    """The caller lacks the permission."""

    uri = NOT_AUTHORIZED


class InvalidEvent(Refused):
    """An event cannot be published; the message is the reason given to the dead-letter queue."""


class UnknownTopic(InvalidEvent, ValueError):
    """The topic is not in the catalogue, so nothing may publish to it."""


class HistoryGap(Refused, LookupError):
    """The event asked for is no longer held (or never was): the client must reload."""

    uri = HISTORY_GAP


class TicketError(Refused, ValueError):
    """A ticket was refused; `reason` is a short machine-readable word."""

    URIS: ClassVar[dict[str, str]] = {
        "malformed": INVALID_TICKET,
        "invalid": INVALID_TICKET,
        "expired": TICKET_EXPIRED,
        "replayed": TICKET_USED,
    }

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.uri = self.URIS[reason]


class PublishError(TidingsError, RuntimeError):
    """An event was not published."""


class PublishRefused(PublishError, Refused):
    """The router did not accept the event (or it cannot be sent at all)."""


class PublishTimeout(PublishError, Transient):
    """No acknowledgement from the router in time; the router may be down."""


class Unavailable(Transient):
    """A part tidings depends on (the router, the broker, Redis) cannot be reached."""


def detached(error: BaseException) -> BaseException:
    """`error` without its traceback and the errors it was raised from or during.

    Kept for its message while a message waits to be dead-lettered, an error
    with its traceback would hold the frames that handled the message, and
    with them the message: a reference cycle, which only the garbage
    collector frees, and the worker runs it rarely (workers/heap.py).
    """
    error.__traceback__ = None
    error.__context__ = None
    error.__cause__ = None
    return error
