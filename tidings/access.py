"""Who may do what: the one rule that both the router's authorizer and the history read."""

from __future__ import annotations

from collections.abc import Iterable

from tidings import catalogue
from tidings.names import PUBLIC_PROCEDURES


def may_subscribe(user: str, perms: Iterable[str], uri: str) -> bool:
    """May this browser user receive events of the concrete topic `uri`?"""
    found = catalogue.lookup(uri)
    if found is None:
        return False
    topic, parts = found
    if topic.audience == "authenticated":
        return True
    if topic.audience == "self":
        return parts.get("user") == user
    if topic.audience == "entity":
        return f"entity:{parts['entity']}:view" in set(perms)
    return False


def may_subscribe_prefix(user: str, perms: Iterable[str], prefix: str) -> bool:
    """A prefix subscription is allowed only if every topic it could match is allowed.

    That holds only for a prefix that ends inside a topic family whose every
    member this user may read: `tidings.entity.order.` with `entity:order:view`,
    `tidings.presence.order.` likewise, or `tidings.user.<self>` exactly.
    """
    perms = set(perms)
    for family in ("tidings.entity.", "tidings.presence."):
        if prefix.startswith(family):
            rest = prefix[len(family) :]
            entity = rest.split(".", 1)[0]
            # "tidings.entity.order" as a prefix also matches "tidings.entity.orders.1".
            if "." in rest and entity and f"entity:{entity}:view" in perms:
                return _no_wildcards(rest)
            return False
    return False


def may_subscribe_wildcard(user: str, perms: Iterable[str], pattern: str) -> bool:
    """A wildcard subscription (empty URI components match anything), allowed only where
    every topic it could match is allowed: just the record id may be left open."""
    parts = pattern.split(".")
    if any(not _no_wildcards(p) for p in parts) or len(parts) != 4:
        return False
    family, entity, record = parts[1], parts[2], parts[3]
    if parts[0] != "tidings" or family not in ("entity", "presence") or not entity:
        return False
    if record and not may_subscribe(user, perms, pattern):
        return False
    return f"entity:{entity}:view" in set(perms)


def may_call(user: str, perms: Iterable[str], procedure: str) -> bool:
    """Browser procedures: the public `tidings.*` API (each checks its own arguments)."""
    return procedure in PUBLIC_PROCEDURES


def _no_wildcards(text: str) -> bool:
    return "#" not in text and "*" not in text and " " not in text
