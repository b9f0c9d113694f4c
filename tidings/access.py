"""Who may do what: the one rule that the router's authorizer, the history and presence read.

Everything follows from the catalogue's declarations: a topic by its
family's audience; a prefix or wildcard subscription only when every topic
of every family it could match is allowed to this user; a procedure by the
permission declared for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tidings import catalogue
from tidings.catalogue import Topic


def may_subscribe(user: str, perms: Iterable[str], uri: str) -> bool:
    """May this browser user receive events of the concrete topic `uri`?"""
    found = catalogue.lookup(uri)
    if found is None:
        return False
    topic, parts = found
    return topic.allows(user, perms, parts)


def may_subscribe_prefix(user: str, perms: Iterable[str], prefix: str) -> bool:
    """A prefix subscription: allowed only if every topic it could match is allowed.

    `tidings.entity.order.` with `entity:order:view` is (every order record);
    `tidings.entity.order` is not (it also matches `tidings.entity.orders.1`),
    nor `tidings.user.` (other users' topics).
    """
    if not _clean(prefix) or _reaches_meta(prefix):
        return False
    *whole, partial = prefix.split(".")
    return _all_allowed(user, perms, lambda t: _prefix_parts(t, whole, partial))


def may_subscribe_wildcard(user: str, perms: Iterable[str], pattern: str) -> bool:
    """A wildcard subscription (an empty component matches any): allowed only where every
    topic it could match is allowed, e.g. `tidings.entity.order.` (`match: "wildcard"`)."""
    components = pattern.split(".") if _clean(pattern) else [""]
    if not components[0] or _reaches_meta(components[0] + "."):
        return False  # its namespace must be named: the catalogue covers only its own
    return _all_allowed(user, perms, lambda t: _wildcard_parts(t, components))


def may_call(user: str, perms: Iterable[str], procedure: str) -> bool:
    """Browser procedures: those the catalogue declares, with the permission each takes."""
    found = catalogue.procedure(procedure)
    return found is not None and found.allows(perms)


# The variables a subscription binds in a family, or None: no topic of it can match.
Bound = tuple[dict[str, str], bool] | None


def _all_allowed(user: str, perms: Iterable[str], bind: Callable[[Topic], Bound]) -> bool:
    perms = set(perms)
    matched = False
    for topic in catalogue.current().topics:
        bound = bind(topic)
        if bound is None:
            continue  # no topic of this family can match
        matched = True
        parts, _ = bound
        if not topic.audience_variables() <= set(parts):
            return False  # its audience depends on a part left open: not all allowed
        if not topic.allows(user, perms, parts):
            return False
    return matched


def _prefix_parts(topic: Topic, whole: list[str], partial: str) -> Bound:
    """The variables a prefix binds in `topic`, if a topic of it can start with the prefix."""
    if len(topic.segments) <= len(whole):
        return None  # its topics are too short to start with the prefix and its dot
    parts: dict[str, str] = {}
    for given, segment in zip(whole, topic.segments, strict=False):
        if not _fits(given, segment, parts):
            return None
    following = topic.segments[len(whole)]
    if not following.startswith("{") and not following.startswith(partial):
        return None
    return parts, True


def _wildcard_parts(topic: Topic, components: list[str]) -> Bound:
    if len(topic.segments) != len(components):
        return None
    parts: dict[str, str] = {}
    for given, segment in zip(components, topic.segments, strict=True):
        if given == "":
            continue  # any: a literal matches, a variable stays open
        if not _fits(given, segment, parts):
            return None
    return parts, True


def _fits(given: str, segment: str, parts: dict[str, str]) -> bool:
    """Whether a concrete component fits a pattern segment; binds it when a variable."""
    if segment.startswith("{"):
        parts[segment[1:-1]] = given
        return given != ""
    return given == segment


# The router's own topics (sessions, subscriptions, with every session's details).
_META = ("wamp.", "crossbar.")


def _reaches_meta(prefix: str) -> bool:
    """Whether a topic starting with `prefix` may be one of the router's own."""
    return any(meta.startswith(prefix) or prefix.startswith(meta) for meta in _META)


def _clean(text: str) -> bool:
    return isinstance(text, str) and not any(c in text for c in "#* \n\t")
