"""The catalogue: the topic families tidings publishes, who may subscribe, and the procedures
browsers may call, read from the JSON file operators edit (`.crossbar/catalogue.json`).

Router and workers read the same file (TIDINGS_CATALOGUE names another)
and check it when they start: a wrong entry stops them with one line naming
it. Publishing, the authorizer, the history and presence all ask this
module; adding a topic family or a procedure is an entry in the file.

Where two families match one topic, the one with more fixed parts wins.
A topic family: `{"pattern": "tidings.chat.{room}", "audience":
"chat:{room}:join"}`. `audience` is "authenticated" (every signed-in user),
"self" (only the user whose id is the pattern's `{user}`), or a permission
template filled in from the topic (`entity:{entity}:view`). Optional:
`history` (true: kept for missed-event recovery), `history_size` (events
kept per topic), `retained` (the last event is handed to later
subscribers), `presence` (a topic pattern: who subscribes is announced
there). A procedure: `{"name": "app.orders.reserve", "permission":
"order:reserve"}`, or "authenticated".
"""

from __future__ import annotations

import functools
import json
import os
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidings.errors import ConfigError, UnknownTopic

# One URI component of a concrete topic: no dots, no wildcards, no white space.
_SEGMENT = r"[A-Za-z0-9_\-]{1,64}"
_LITERAL = re.compile(r"[a-z0-9_\-]+")
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_PERMISSION = re.compile(r"[A-Za-z0-9_\-:.{}]{1,128}")
_PROCEDURE = re.compile(r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)+")
AUTHENTICATED, SELF = "authenticated", "self"
DEFAULT_PATH = Path(__file__).resolve().parent.parent / ".crossbar" / "catalogue.json"
PATH_VARIABLE = "TIDINGS_CATALOGUE"


@dataclass(frozen=True)
class Topic:
    """A family of topics (see the module docstring)."""

    pattern: str
    audience: str
    history: bool = True
    history_size: int | None = None
    retained: bool = False
    presence: str | None = None
    description: str = ""
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    segments: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        escaped = re.escape(self.pattern).replace(r"\{", "{").replace(r"\}", "}")
        source = re.sub(r"{(\w+)}", lambda m: f"(?P<{m.group(1)}>{_SEGMENT})", escaped)
        object.__setattr__(self, "regex", re.compile(source))
        object.__setattr__(self, "segments", tuple(self.pattern.split(".")))

    def match(self, uri: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(uri)  # "$" would let a final newline through
        return found.groupdict() if found else None

    def allows(self, user: str, perms: Iterable[str], parts: dict[str, str]) -> bool:
        """May `user` with `perms` receive the topic of these parts (every variable of the
        audience bound in `parts`)?"""
        if self.audience == AUTHENTICATED:
            return True
        if self.audience == SELF:
            return parts.get("user") == user
        try:
            needed = self.audience.format(**parts)
        except KeyError:
            return False  # a variable it needs is not known: never
        return needed in set(perms)

    def audience_variables(self) -> set[str]:
        if self.audience == SELF:
            return {"user"}
        return set(_VARIABLE.findall(self.audience))

    def presence_topic(self, parts: dict[str, str]) -> str | None:
        return self.presence.format(**parts) if self.presence else None


@dataclass(frozen=True)
class Procedure:
    """A procedure browsers may call, with the permission it takes."""

    name: str
    permission: str = AUTHENTICATED
    description: str = ""

    def allows(self, perms: Iterable[str]) -> bool:
        return self.permission == AUTHENTICATED or self.permission in set(perms)


@dataclass(frozen=True, eq=False)  # by identity: one per file read
class Catalogue:
    topics: tuple[Topic, ...]
    procedures: dict[str, Procedure]
    source: str = "catalogue.json"

    def family(self, pattern: str) -> Topic | None:
        return next((t for t in self.topics if t.pattern == pattern), None)

    def namespaces(self) -> list[str]:
        """The first parts of the declared topics, as prefixes: `tidings.`, `shop.`."""
        return sorted({t.segments[0] + "." for t in self.topics if t.history})


def parse(data: Any, source: str = "catalogue.json") -> Catalogue:
    """The catalogue of this JSON document; ConfigError naming the entry that is wrong."""
    if not isinstance(data, dict) or set(data) - {"topics", "procedures"}:
        raise ConfigError(f"{source}: must be an object of 'topics' and 'procedures'")
    topics = tuple(
        _topic(entry, f"{source}: topics[{n}]") for n, entry in enumerate(_list(data, "topics"))
    )
    procedures: dict[str, Procedure] = {}
    for n, entry in enumerate(_list(data, "procedures")):
        procedure = _procedure(entry, f"{source}: procedures[{n}]")
        if procedure.name in procedures:
            raise ConfigError(f"{source}: procedures[{n}]: {procedure.name} is declared twice")
        procedures[procedure.name] = procedure
    patterns = [t.pattern for t in topics]
    for n, topic in enumerate(topics):
        where = f"{source}: topics[{n}] ({topic.pattern})"
        if patterns.count(topic.pattern) > 1:
            raise ConfigError(f"{where}: declared twice")
        if topic.presence and topic.presence not in patterns:
            raise ConfigError(f"{where}: its presence topic {topic.presence} is not declared")
    return Catalogue(topics, procedures, source)


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"'{key}' must be a list")
    return value


_TOPIC_KEYS = {"pattern", "audience", "history", "history_size", "retained", "presence"}


def _topic(entry: Any, where: str) -> Topic:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object")
    unknown = set(entry) - _TOPIC_KEYS - {"description"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    pattern = entry.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: 'pattern' must be a topic like tidings.chat.{{room}}")
    where = f"{where} ({pattern})"
    names = []
    for segment in pattern.split("."):
        variable = _VARIABLE.fullmatch(segment)
        if variable:
            names.append(variable.group(1))
        elif not _LITERAL.fullmatch(segment):
            raise ConfigError(
                f"{where}: each part must be lowercase letters, digits, '_', '-' or one "
                f"{{variable}}, not {segment!r}"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: a variable appears twice")
    reserved = pattern.split(".")[0] in ("wamp", "crossbar")
    if reserved or "." not in pattern or pattern.startswith("{"):
        raise ConfigError(f"{where}: needs two or more parts, the first one fixed and not 'wamp.'")
    audience = entry.get("audience")
    if not isinstance(audience, str) or not audience:
        raise ConfigError(f"{where}: 'audience' must be authenticated, self or a permission")
    if audience == SELF and "user" not in names:
        raise ConfigError(f"{where}: audience 'self' needs a {{user}} in the pattern")
    if audience not in (AUTHENTICATED, SELF):
        if not _PERMISSION.fullmatch(audience):
            raise ConfigError(f"{where}: audience {audience!r} is not a permission template")
        missing = set(_template_names(audience, where)) - set(names)
        if missing:
            raise ConfigError(
                f"{where}: audience {audience!r} names {{{sorted(missing)[0]}}}, "
                "which the pattern does not have"
            )
    history = entry.get("history", True)
    retained = entry.get("retained", False)
    if not isinstance(history, bool) or not isinstance(retained, bool):
        raise ConfigError(f"{where}: 'history' and 'retained' must be true or false")
    size = entry.get("history_size")
    if size is not None and (type(size) is not int or not 1 <= size <= 10_000):
        raise ConfigError(f"{where}: 'history_size' must be a whole number from 1 to 10000")
    presence = entry.get("presence")
    if presence is not None:
        if not isinstance(presence, str):
            raise ConfigError(f"{where}: 'presence' must be a topic pattern")
        extra = set(_VARIABLE.findall(presence)) - set(names)
        if extra:
            raise ConfigError(f"{where}: its presence topic names {{{sorted(extra)[0]}}}")
    description = entry.get("description", "")
    return Topic(
        pattern,
        audience,
        history=history,
        history_size=size,
        retained=retained,
        presence=presence,
        description=str(description),
    )


def _template_names(template: str, where: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError:
        raise ConfigError(f"{where}: audience {template!r} has unbalanced braces") from None


def _procedure(entry: Any, where: str) -> Procedure:
    if not isinstance(entry, dict) or set(entry) - {"name", "permission", "description"}:
        raise ConfigError(f"{where}: must be an object of name, permission and description")
    name = entry.get("name")
    if not isinstance(name, str) or not _PROCEDURE.fullmatch(name) or name.startswith("wamp."):
        raise ConfigError(
            f"{where}: 'name' must be a dotted lowercase URI such as app.orders.reserve, "
            "not under wamp."
        )
    permission = entry.get("permission", AUTHENTICATED)
    if not isinstance(permission, str) or not _PERMISSION.fullmatch(permission):
        raise ConfigError(f"{where} ({name}): 'permission' must be authenticated or a permission")
    if "{" in permission:
        raise ConfigError(f"{where} ({name}): a procedure's permission takes no {{variables}}")
    return Procedure(name, permission, str(entry.get("description", "")))


def load(path: Path) -> Catalogue:
    """Read and check the catalogue file; ConfigError saying what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the catalogue {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path.name}: not JSON ({exc})") from None
    return parse(data, path.name)


_current: Catalogue | None = None


def current() -> Catalogue:
    """This process's catalogue: TIDINGS_CATALOGUE, or the shipped `.crossbar/catalogue.json`;
    read once."""
    global _current
    if _current is None:
        _current = load(Path(os.environ.get(PATH_VARIABLE) or DEFAULT_PATH))
    return _current


def use(catalogue: Catalogue | None) -> None:
    """Replace this process's catalogue (None: read the file again on next use)."""
    global _current
    _current = catalogue
    _lookup.cache_clear()


def lookup(uri: str) -> tuple[Topic, dict[str, str]] | None:
    """The family a concrete topic URI belongs to, with its parts."""
    if not isinstance(uri, str):
        return None
    found = _lookup(uri)
    return None if found is None else (found[0], dict(found[1]))


# Every publish is looked up, in the worker and again in the router, and a
# few topics carry most events: remember the answers for the busiest ones.
@functools.lru_cache(maxsize=4096)
def _lookup(uri: str) -> tuple[Topic, tuple[tuple[str, str], ...]] | None:
    for topic in _by_specificity(current()):
        parts = topic.match(uri)
        if parts is not None:
            return topic, tuple(parts.items())
    return None


@functools.lru_cache(maxsize=4)
def _by_specificity(catalogue: Catalogue) -> tuple[Topic, ...]:
    """Where two families match one topic (tidings.presence.chat.{room} and
    tidings.presence.{entity}.{id}), the one with more fixed parts wins."""
    return tuple(
        sorted(catalogue.topics, key=lambda t: -sum(not s.startswith("{") for s in t.segments))
    )


def require(uri: str) -> tuple[Topic, dict[str, str]]:
    """Like `lookup`, but an unknown topic is an error."""
    topic, parts = _require(uri)
    return topic, dict(parts)


def family(uri: str) -> Topic:
    """The family of a topic in the catalogue (UnknownTopic if none), without its parts:
    what a publish needs, once per event."""
    return _require(uri)[0]


def _require(uri: str) -> tuple[Topic, tuple[tuple[str, str], ...]]:
    if not isinstance(uri, str):
        raise UnknownTopic(f"topic must be a string, not {type(uri).__name__}")
    found = _lookup(uri)
    if found is None:
        raise UnknownTopic(f"topic {uri!r} is not in the catalogue ({current().source})")
    return found


def keeps_history(uri: str) -> bool:
    """Whether events of this topic are kept for missed-event recovery."""
    found = lookup(uri)
    return found is not None and found[0].history


def history_size(uri: str) -> int | None:
    """Events kept of this topic: its family's `history_size` (None: the default)."""
    found = lookup(uri)
    return found[0].history_size if found is not None else None


def presence_of(uri: str) -> str | None:
    """The topic where who is on the topic `uri` is announced, if its family declares one
    and that topic is the family's own: `tidings.entity.chat.lobby` (entity `chat`)
    must not announce its readers in the chat room `lobby`."""
    found = lookup(uri)
    if found is None or found[0].presence is None:
        return None
    topic = found[0].presence_topic(found[1])
    owner = lookup(topic) if topic is not None else None
    return topic if owner is not None and owner[0].pattern == found[0].presence else None


def procedure(name: str) -> Procedure | None:
    """The declared browser procedure `name`, or None."""
    return current().procedures.get(name) if isinstance(name, str) else None


def entity_topic(entity: str, entity_id: object) -> str:
    return f"tidings.entity.{entity}.{entity_id}"


def collection_topic(entity: str) -> str:
    return f"tidings.entity.{entity}"


def presence_topic(entity: str, entity_id: object) -> str:
    return f"tidings.presence.{entity}.{entity_id}"


def user_topic(user: object) -> str:
    return f"tidings.user.{user}"


def chat_topic(room: str) -> str:
    return f"tidings.chat.{room}"


MAINTENANCE_TOPIC = "tidings.maintenance"
