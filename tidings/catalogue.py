"""The topic catalogue: every WAMP topic tidings publishes, and who may subscribe to it.

Adding a topic is one entry here: publishing, the router's authorizer and the
history all read this list.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from tidings.errors import UnknownTopic

# One URI component: no dots, no wildcards, no white space.
_SEGMENT = r"[A-Za-z0-9_\-]{1,64}"


@dataclass(frozen=True)
class Topic:
    """A family of topics.

    `pattern` names its variable parts in braces, e.g. `tidings.user.{user}`.
    `audience` says who may subscribe:
      - "authenticated": every signed-in user;
      - "entity": users whose ticket holds `entity:<entity>:view`;
      - "self": only the user whose id is `{user}`.
    `history`: the router keeps its recent events for missed-event recovery.
    """

    pattern: str
    audience: str
    history: bool = True
    description: str = ""
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        escaped = re.escape(self.pattern).replace(r"\{", "{").replace(r"\}", "}")
        source = re.sub(r"{(\w+)}", lambda m: f"(?P<{m.group(1)}>{_SEGMENT})", escaped)
        object.__setattr__(self, "regex", re.compile(source))

    def match(self, uri: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(uri)  # "$" would let a final newline through
        return found.groupdict() if found else None


CATALOGUE: tuple[Topic, ...] = (
    Topic("tidings.maintenance", "authenticated", description="maintenance mode; retained"),
    Topic("tidings.entity.{entity}.{id}", "entity", description="one record changed"),
    Topic("tidings.entity.{entity}", "entity", description="records created or deleted"),
    Topic(
        "tidings.presence.{entity}.{id}",
        "entity",
        history=False,
        description="who joined or left a record",
    ),
    Topic("tidings.user.{user}", "self", description="private to one user"),
    # Custom topics go here. The demo price feed of the admin page:
    Topic("tidings.demo.{feed}", "authenticated", history=False, description="demo feeds"),
)


def lookup(uri: str) -> tuple[Topic, dict[str, str]] | None:
    """The catalogue entry a concrete topic URI belongs to, with its parts."""
    if not isinstance(uri, str):
        return None
    found = _lookup(uri)
    return None if found is None else (found[0], dict(found[1]))


# Every publish is looked up, in the worker and again in the router, and a
# few topics carry most events: remember the answers for the busiest ones.
@functools.lru_cache(maxsize=4096)
def _lookup(uri: str) -> tuple[Topic, tuple[tuple[str, str], ...]] | None:
    for topic in CATALOGUE:
        parts = topic.match(uri)
        if parts is not None:
            return topic, tuple(parts.items())
    return None


def require(uri: str) -> tuple[Topic, dict[str, str]]:
    """Like `lookup`, but an unknown topic is an error."""
    if not isinstance(uri, str):
        raise UnknownTopic(f"topic must be a string, not {type(uri).__name__}")
    found = lookup(uri)
    if found is None:
        raise UnknownTopic(f"topic {uri!r} is not in the catalogue (tidings/catalogue.py)")
    return found


def entity_topic(entity: str, entity_id: object) -> str:
    return f"tidings.entity.{entity}.{entity_id}"


def collection_topic(entity: str) -> str:
    return f"tidings.entity.{entity}"


def presence_topic(entity: str, entity_id: object) -> str:
    return f"tidings.presence.{entity}.{entity_id}"


def user_topic(user: object) -> str:
    return f"tidings.user.{user}"


MAINTENANCE_TOPIC = "tidings.maintenance"
