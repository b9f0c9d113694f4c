"""Domain events: validate them and turn each into the WAMP publishes it stands for."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from tidings import catalogue
from tidings.errors import InvalidEvent, UnknownTopic

# Browsers refuse WebSocket messages above 64 KiB (.crossbar/config.json);
# an event must fit in one with room for the WAMP envelope.
MAX_EVENT_BYTES = 60 * 1024
# Deeper payloads would reach the serializers' recursion limits on the way out.
MAX_DEPTH = 100
# MsgPack, the codec of the backend link, carries integers in 64 bits.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
# Users one event may name in eligible_authids or exclude_authids.
MAX_AUTHIDS = 1000
# Event ids derived from a message that has none: the same message, the same id.
_DERIVED = uuid.UUID("6c1f0c8a-5d3e-4b8e-9a57-3f1f5b2a9e10")
ENTITY_ACTIONS = ("created", "updated", "deleted")


@dataclass(frozen=True)
class Outgoing:
    """One WAMP publish: topic, payload and publish options."""

    topic: str
    payload: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


# The second `now_iso` last wrote, and how: every event without `at` gets one.
_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """Now in UTC to the millisecond, written as `_iso` writes a timestamp."""
    global _second
    now = time.time()
    whole = int(now)
    second, text = _second
    if whole != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{int((now - whole) * 1000):03d}Z"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_event_id() -> str:
    return str(uuid.uuid4())


def decode(body: bytes | str) -> dict[str, Any]:
    """Parse a raw message body into an event object."""
    if len(body) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event is {len(body)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        event = quick_json(body)
    except Exception:
        # What msgspec does not read (NaN, a lone surrogate, a number no float
        # holds, UTF-16, invalid JSON) is read as it always was, errors and all.
        event = _read_json(body)
    if not isinstance(event, dict):
        raise InvalidEvent(f"event must be a JSON object, not {type(event).__name__}")
    return event


# msgspec reads JSON four times faster than the standard library, into the same
# values where it reads it at all (tests/unit/test_events.py compares the two).
# Floats are read by `float`, as the standard library reads them: msgspec's own
# reading takes 13 µs for a number written with an exponent of 289 or more.
quick_json = msgspec.json.Decoder(float_hook=float).decode


def _read_json(body: bytes | str) -> Any:
    """The standard library's reading of `body`; raises InvalidEvent."""
    try:
        return json.loads(body)
    except RecursionError:
        # Not a ValueError: uncaught, it would leave the message unacked for good.
        raise InvalidEvent("not JSON that can be read: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None


def derived_event_id(body: bytes | str, message_id: Any = None) -> str:
    """The id of an event that came without one: its AMQP message id, else one derived
    from its content, so that a redelivered copy carries the same id (and browsers
    drop it). Identical events sent without ids are therefore one event."""
    if isinstance(message_id, str) and 0 < len(message_id) <= 128:
        return message_id
    data = body.encode() if isinstance(body, str) else body
    return str(uuid.uuid5(_DERIVED, hashlib.sha256(data).hexdigest()))


def plan(event: dict[str, Any], default_event_id: str | None = None) -> list[Outgoing]:
    """The publishes a raw domain event stands for; raises InvalidEvent.

    `default_event_id`: the id of an event without `event_id` (see derived_event_id).
    """
    kind = event.get("type")
    event_id = _event_id(event.get("event_id") or default_event_id)
    if kind in ("entity.created", "entity.updated", "entity.deleted"):
        return entity_changed(
            event.get("entity"),
            event.get("id"),
            action=kind.split(".", 1)[1],
            changed_by=event.get("changed_by"),
            fields=event.get("fields"),
            event_id=event_id,
            at=event.get("at"),
            exclude_sessions=origin_sessions(event.get("origin_session")),
        )
    if kind in ("maintenance.on", "maintenance.off"):
        return [
            maintenance(
                kind == "maintenance.on",
                message=event.get("message"),
                by=event.get("by"),
                event_id=event_id,
                at=event.get("at"),
            )
        ]
    if kind == "publish":
        payload = event.get("payload")
        return [publish(event.get("topic"), payload, event_id=event_id, at=event.get("at"))]
    raise InvalidEvent(f"unknown event type {kind!r}")


def publish(
    topic: Any, payload: Any, *, event_id: str | None = None, at: Any = None, **options: Any
) -> Outgoing:
    """A publish to a catalogue topic; the payload gets `event_id` and `at` if it has none."""
    try:
        family = catalogue.family(topic)
    except UnknownTopic as exc:
        raise InvalidEvent(str(exc)) from None
    if family.retained and "retain" not in options:
        options["retain"] = True  # the catalogue says later subscribers get its last event
    if not isinstance(payload, dict):
        raise InvalidEvent(f"payload must be a JSON object, not {type(payload).__name__}")
    if options:  # most publishes have none
        for name in ("exclude_authids", "eligible_authids"):
            _check_user_ids(name, options.get(name))
        if options.get("retain") and (
            options.get("exclude_authids") or options.get("eligible_authids")
        ):
            # Crossbar hands a retained event to every later subscriber, whoever it names.
            raise InvalidEvent("retain cannot go with eligible_authids or exclude_authids")
        options = {k: v for k, v in options.items() if v}
    stamped = {
        **payload,
        "event_id": _event_id(payload.get("event_id") or event_id),
        "at": _timestamp(payload.get("at") or at),
    }
    _check_size(stamped)
    return Outgoing(topic, stamped, options)


def _check_user_id(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
        raise InvalidEvent(f"{name} must be a user id (integer or string)")


def _check_user_ids(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(
        isinstance(item, str | int) and not isinstance(item, bool) and len(str(item)) <= 64
        for item in value
    ):
        raise InvalidEvent(f"{name} must be a list of user ids (strings or integers)")
    if len(value) > MAX_AUTHIDS:
        raise InvalidEvent(f"{name} names {len(value)} users; at most {MAX_AUTHIDS}")


def entity_changed(
    entity: Any,
    entity_id: Any,
    *,
    action: Any = "updated",
    changed_by: Any = None,
    fields: Any = None,
    event_id: str | None = None,
    at: Any = None,
    exclude_sessions: list[int] | None = None,
) -> list[Outgoing]:
    """A record changed: its own topic, and for created/deleted its collection topic too."""
    if not isinstance(entity, str) or not _NAME.match(entity):
        raise InvalidEvent("entity must be a name of letters, digits, '_' or '-'")
    if isinstance(entity_id, bool) or not isinstance(entity_id, int | str):
        raise InvalidEvent("id must be an integer or a string")
    if not _NAME.match(str(entity_id)):
        raise InvalidEvent("id must be letters, digits, '_' or '-'")
    if action not in ENTITY_ACTIONS:
        raise InvalidEvent(f"action must be one of {', '.join(ENTITY_ACTIONS)}")
    _check_user_id("changed_by", changed_by)
    if fields is not None and (
        not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)
    ):
        raise InvalidEvent("fields must be a list of field names")
    payload = {
        "event_id": _event_id(event_id),
        "action": action,
        "entity": entity,
        "id": entity_id,
        "changed_by": changed_by,
        "fields": fields,
        "at": _timestamp(at),
    }
    _check_size(payload)
    options: dict[str, Any] = {"exclude_sessions": exclude_sessions} if exclude_sessions else {}
    out = [Outgoing(catalogue.entity_topic(entity, entity_id), payload, options)]
    if action in ("created", "deleted"):
        out.append(Outgoing(catalogue.collection_topic(entity), payload, options))
    return out


def maintenance(
    enabled: Any,
    *,
    message: Any = None,
    by: Any = None,
    event_id: str | None = None,
    at: Any = None,
) -> Outgoing:
    """Maintenance mode on or off; retained so that late joiners learn the state."""
    if not isinstance(enabled, bool):
        raise InvalidEvent("enabled must be true or false")
    if message is not None and not isinstance(message, str):
        raise InvalidEvent("message must be a string")
    _check_user_id("by", by)
    payload = {
        "event_id": _event_id(event_id),
        "enabled": enabled,
        "message": message,
        "by": by,
        "at": _timestamp(at),
    }
    _check_size(payload)
    return Outgoing(catalogue.MAINTENANCE_TOPIC, payload, {"retain": True})


def origin_sessions(origin_session: Any) -> list[int] | None:
    """The browser session that made the change, which is not told about it."""
    if origin_session is None:
        return None
    if isinstance(origin_session, bool) or not isinstance(origin_session, int):
        raise InvalidEvent("origin_session must be a WAMP session id (integer)")
    return [origin_session]


def _event_id(value: Any) -> str:
    if value is None or value == "":
        return new_event_id()
    if not isinstance(value, str) or len(value) > 128:
        raise InvalidEvent("event_id must be a string of at most 128 characters")
    return value


def _timestamp(value: Any) -> str:
    """`at` in UTC, so that timestamps compare as text too; now if none was given.

    A timestamp without an offset is taken to be UTC already.
    """
    if value is None or value == "":
        return now_iso()
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidEvent("at must be an ISO-8601 timestamp string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"at is not an ISO-8601 timestamp: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _iso(moment.astimezone(UTC))


# In the encoded payload: a run of digits that might be an integer beyond 64 bits.
_LONG_NUMBER = re.compile(r"\d{19}")


# One encoder for every event: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)


def _check_size(payload: dict[str, Any]) -> None:
    if not _plainly_small(payload):
        _check_encoded(payload)


# Above this many entries a payload is encoded to be checked, however plain.
_PLAIN_ENTRIES = 64
# The most bytes JSON takes for a character (\u00XX), and for an entry besides
# its text: quotes, colon, comma, a number's 24 characters at most.
_CHAR_BYTES, _ENTRY_BYTES = 6, 32


def _plainly_small(payload: dict[str, Any]) -> bool:
    """Whether the payload is flat, of ASCII text, integers of fewer than 19 digits, finite
    floats, booleans and nulls, and too short to reach the limit however it is written:
    then it is sendable as it is, and encoding it to find out would cost more."""
    if len(payload) > _PLAIN_ENTRIES:
        return False
    characters = 0
    for key, value in payload.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(value)
        if kind is str:
            if not value.isascii():
                return False
            characters += len(value)
        elif kind is int:
            if not -(10**18) < value < 10**18:
                return False
        elif kind is float:
            if not math.isfinite(value):
                return False
        elif value is not None and kind is not bool:
            return False
        characters += len(key)
    return _CHAR_BYTES * characters + _ENTRY_BYTES * len(payload) + 2 <= MAX_EVENT_BYTES


def _check_encoded(payload: dict[str, Any]) -> None:
    try:
        text = _ENCODER.encode(payload)
        # ASCII text (most events) is its own UTF-8; the rest is encoded, which also
        # finds lone surrogates.
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except TypeError as exc:  # a value no JSON holds, e.g. a datetime from a Celery client
        raise InvalidEvent(f"payload is not JSON: {exc}") from None
    except (ValueError, RecursionError, UnicodeEncodeError):
        _check_sendable(payload)  # raises, saying which
        raise InvalidEvent("payload is not JSON that can be sent") from None
    # The walk below is the slow part of checking an event: most payloads
    # cannot hold what it looks for, as their encoded text shows.
    if text.count("[") + text.count("{") > MAX_DEPTH or _LONG_NUMBER.search(text):
        _check_sendable(payload)
    if size > MAX_EVENT_BYTES:
        raise InvalidEvent(f"payload is {size} bytes; the limit is {MAX_EVENT_BYTES}")


def _check_sendable(payload: Any) -> None:
    """Refuse what JSON decoding lets through but the way to browsers cannot carry.

    NaN and Infinity (no browser parses them), integers beyond 64 bits and
    lone surrogates (the backend link cannot serialize them), and very deep
    nesting would otherwise fail only after the event was accepted.
    """
    stack: list[tuple[Any, int]] = [(payload, 0)]
    while stack:  # iterative: a deep payload must not exhaust this stack either
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidEvent(f"payload is nested deeper than {MAX_DEPTH} levels")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidEvent("payload holds NaN or Infinity, which is not JSON")
        elif isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            raise InvalidEvent("payload holds an integer that does not fit in 64 bits")
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEvent("payload holds a string that is not valid Unicode") from None
