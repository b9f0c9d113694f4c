"""What one browser session may ask of the router: a rate, a size, a count, a backlog.

Checked on every message a browser sends (`refusal`) and after every message
the router sends it (`answered`, `bound_unsent`); wired into Crossbar by
router.guards. Nothing is kept of what was refused.
"""

from __future__ import annotations

import re
import time
import weakref
from typing import Any

import txaio
from autobahn.wamp import message

from tidings.errors import INVALID_ARGUMENT, LIMIT_EXCEEDED, NOT_AUTHORIZED, RATE_LIMITED
from tidings.settings import Limits

log = txaio.make_logger()  # type: ignore[attr-defined]

# Crossbar's loose URI rules (components without white space, dots or '#'):
# checked here so that a browser is told tidings.error.invalid_argument, not
# Crossbar's wamp.error.invalid_uri. Prefix: the last component may be empty;
# wildcard: any may be.
_COMPONENT = r"[^\s.#]+"
_EXACT = re.compile(rf"({_COMPONENT}\.)*{_COMPONENT}")
_PREFIX = re.compile(rf"({_COMPONENT}\.)*({_COMPONENT})?")
_WILDCARD = re.compile(r"([^\s.#]*\.)*[^\s.#]*")
# Refusals a session may have outstanding before it is dropped as a flood: a
# page that behaves gets none. They are forgiven at one per second, so that a
# page open for days is not dropped for an error an hour.
FLOOD = 100
FORGIVEN_PER_SECOND = 1.0


class Bucket:
    """A token bucket: `rate` a second, twice that in a burst."""

    __slots__ = ("rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = 2 * rate
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(2 * self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Browser:
    """What the limits keep per browser session."""

    __slots__ = ("call_bucket", "calls", "dropped", "message_bucket", "refused", "refused_stamp")

    def __init__(self, limits: Limits) -> None:
        now = time.monotonic()
        self.calls: set[int] = set()
        self.message_bucket = Bucket(limits.message_rate, now)
        self.call_bucket = Bucket(limits.call_rate, now)
        self.refused_stamp = now
        self.refused = 0.0
        self.dropped = False


_browsers: weakref.WeakKeyDictionary[Any, Browser] = weakref.WeakKeyDictionary()
# Per address (router.connection_limits): its sessions share one bucket, so
# that a hundred sessions are not a hundred buckets.
_addresses: dict[str, Bucket] = {}


def forget_address(address: str) -> None:
    """Its last connection closed."""
    _addresses.pop(address, None)


def browser(limits: Limits, session: Any) -> Browser:
    state = _browsers.get(session)
    if state is None:
        state = _browsers[session] = Browser(limits)
    return state


def refusal(limits: Limits, router: Any, session: Any, msg: Any) -> tuple[str, str] | None:
    """(error URI, why) if this message of a browser is refused; None to let it through."""
    return _refusal(limits, router, session, msg, browser(limits, session))


def is_dropped(session: Any) -> bool:
    """Dropped by the limits: what it still sent is ignored, unanswered."""
    state = _browsers.get(session)
    return state is not None and state.dropped


def refused(limits: Limits, session: Any) -> None:
    """The router answered a browser with an ERROR: by these limits or by the authorizer."""
    state = browser(limits, session)
    now = time.monotonic()
    forgiven = (now - state.refused_stamp) * FORGIVEN_PER_SECOND
    state.refused = max(0.0, state.refused - forgiven) + 1
    state.refused_stamp = now
    if state.refused > FLOOD and not state.dropped:
        drop(session, state, f"{state.refused:.0f} refused requests in a row")


def _refusal(
    limits: Limits, router: Any, session: Any, msg: Any, state: Browser
) -> tuple[str, str] | None:
    kind = type(msg)
    now = time.monotonic()
    # One bucket for every message: a flood of anything costs the flooder, not the others.
    if not state.message_bucket.take(now):
        return RATE_LIMITED, f"at most {limits.message_rate:g} messages per second"
    address = getattr(session, "_tidings_address", None)
    if address is not None:
        bucket = _addresses.get(address)
        if bucket is None:
            bucket = _addresses[address] = Bucket(limits.address_rate, now)
        if not bucket.take(now):
            return RATE_LIMITED, f"at most {limits.address_rate:g} messages per second per address"
    if kind is message.Publish or kind is message.Register:
        return NOT_AUTHORIZED, "browsers do not publish or register"
    if getattr(msg, "forward_for", None):
        # A router-to-router option: from a browser, a claim to speak for another
        # session, which the callee would be told is the caller.
        return NOT_AUTHORIZED, "browsers do not forward for others"
    uri = getattr(msg, "topic", None) or getattr(msg, "procedure", None)
    if isinstance(uri, str):
        try:
            size = len(uri.encode())
        except UnicodeEncodeError:
            return INVALID_ARGUMENT, "not a valid URI"  # a lone surrogate
        if size > limits.uri_bytes:
            return INVALID_ARGUMENT, f"URIs are at most {limits.uri_bytes} bytes"
        if not _valid_uri(uri, getattr(msg, "match", None)):
            return INVALID_ARGUMENT, "not a valid URI"
    if kind is message.Subscribe:
        held = router._broker._session_to_subscriptions.get(session, ())
        if len(held) >= limits.subscriptions:
            return LIMIT_EXCEEDED, f"at most {limits.subscriptions} subscriptions per session"
    elif kind is message.Call:
        return _call_refusal(limits, state, msg, now)
    return None


def _valid_uri(uri: str, match: str | None) -> bool:
    pattern = _WILDCARD if match == "wildcard" else _PREFIX if match == "prefix" else _EXACT
    return pattern.fullmatch(uri) is not None


def _call_refusal(limits: Limits, state: Browser, call: Any, now: float) -> tuple[str, str] | None:
    if len(state.calls) >= limits.calls_in_flight:
        return RATE_LIMITED, f"at most {limits.calls_in_flight} calls waiting for an answer"
    # Calls cost the router more than other messages: a bucket of their own, on top.
    if not state.call_bucket.take(now):
        return RATE_LIMITED, f"at most {limits.call_rate:g} calls per second"
    state.calls.add(call.request)
    return None


def answered(limits: Limits, session: Any, msg: Any) -> None:
    """After the router sent a browser `msg`: an answered call no longer waits,
    and a refusal counts towards the flood bound."""
    kind = type(msg)
    if kind is message.Error:
        refused(limits, session)
    if kind is message.Result or (
        kind is message.Error and msg.request_type == message.Call.MESSAGE_TYPE
    ):
        state = _browsers.get(session)
        if state is not None:
            state.calls.discard(msg.request)


def bound_unsent(limits: Limits, session: Any) -> None:
    """Drop a browser whose unsent output passed the bound: it stopped reading."""
    tcp: Any = getattr(session._transport, "transport", None)
    buffered = getattr(tcp, "dataBuffer", None)
    if buffered is None:
        return  # not a plain TCP transport (TLS in the router): not measured
    unsent = len(buffered) - tcp.offset + tcp._tempDataLen
    if unsent > limits.unsent_bytes:
        state = browser(limits, session)
        if not state.dropped:
            drop(session, state, f"{unsent} bytes it does not read")


def drop(session: Any, state: Browser, why: str) -> None:
    """Abort a browser's connection, and let go of what it had not read at once."""
    state.dropped = True
    log.warn(
        "dropping session {session} of {authid}: {why}",
        session=session._session_id,
        authid=session._authid,
        why=why,
    )
    ws: Any = session._transport
    tcp: Any = getattr(ws, "transport", None)
    if tcp is None:
        return
    # Autobahn's own drop: it also stops parsing the frames already read,
    # which a flooder sends by the thousand ahead of the drop.
    ws.wasNotCleanReason = f"dropped by the limits: {why}"
    ws.dropConnection(abort=True)
    ws.data = b""
    # What it did not read would otherwise wait for Python's cycle collector:
    # hundreds of MB from a few dozen dropped sessions.
    if getattr(tcp, "dataBuffer", None) is not None:
        tcp.dataBuffer, tcp.offset = b"", 0
        tcp._tempDataBuffer, tcp._tempDataLen = [], 0
