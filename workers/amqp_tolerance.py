"""A header or property py-amqp cannot decode must cost its message, not the connection.

py-amqp turns an AMQP timestamp in a header table into a `datetime`, and
raises for one beyond the year 9999; it decodes short strings (properties
such as `message_id` or `content_type`, header names and values) as UTF-8,
and raises for bytes that are not. Raised while reading a frame, either
looks like a broken connection or kills the worker: RabbitMQ hands the same
message out again, and every later message waits behind it, forever. With
`install()` such a value is decoded anyway, marked, so that the worker
dead-letters its message with the reason (`undecodable`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import amqp.serialization

# Whether this process ever made an undecodable value: until then no message can
# hold one, and `unreadable` need not walk each message's headers (its hot path).
_made_any = False


class UndecodableTimestamp(int):
    """A header timestamp (seconds since 1970) that no `datetime` can hold."""

    def __new__(cls, value: int) -> UndecodableTimestamp:
        global _made_any
        _made_any = True
        return super().__new__(cls, value)

    def replace(self, **_: Any) -> UndecodableTimestamp:
        return self  # py-amqp calls .replace(tzinfo=None) on what it decoded


class UndecodableText(str):
    """Bytes that are not UTF-8, decoded with replacement characters."""

    def __new__(cls, value: str) -> UndecodableText:
        global _made_any
        _made_any = True
        return super().__new__(cls, value)


def text(data: bytes | str) -> str:
    """`data` decoded as py-amqp decodes short strings, or an UndecodableText if it is not UTF-8."""
    if isinstance(data, str):
        return data  # py-amqp passes its own format strings through here too
    try:
        return data.decode("utf-8", "surrogatepass")  # as py-amqp itself does
    except UnicodeDecodeError:
        return UndecodableText(data.decode("utf-8", "replace"))


class _DatetimeMeta(type):
    def __instancecheck__(cls, value: object) -> bool:
        return isinstance(value, datetime)  # py-amqp's encoder asks this


class _TolerantDatetime(metaclass=_DatetimeMeta):
    """Stands in for `datetime` inside `amqp.serialization`, which uses only these two."""

    @staticmethod
    def fromtimestamp(seconds: int, tz: Any = None) -> datetime | UndecodableTimestamp:
        try:
            return datetime.fromtimestamp(seconds, tz=tz)
        except (OverflowError, ValueError, OSError):
            return UndecodableTimestamp(seconds)


def _named(key: Any) -> str:
    return key if isinstance(key, str) else str(key)  # keeps an UndecodableText as it is


def install() -> None:
    """Decode out-of-range timestamps and text that is not UTF-8 instead of raising;
    idempotent."""
    amqp.serialization.datetime = _TolerantDatetime  # type: ignore[misc]
    amqp.serialization.pstr_t = text  # type: ignore[attr-defined]


def undecodable(headers: Any, properties: Any = None) -> str | None:
    """Why a message's headers (or properties) cannot be taken as they are, or None."""
    stack = [("", headers), *(((f"property {k}", v) for k, v in (properties or {}).items()))]
    while stack:
        name, value = stack.pop()
        if isinstance(value, UndecodableTimestamp):
            return f"header {name!r} holds a timestamp beyond the year 9999 ({int(value)} s)"
        if isinstance(value, UndecodableText) or isinstance(name, UndecodableText):
            return f"{name!r} holds bytes that are not UTF-8"
        if isinstance(value, dict):
            stack.extend(
                (key if isinstance(key, str) else str(key), item) for key, item in value.items()
            )
        elif isinstance(value, list | tuple):
            stack.extend((name, item) for item in value)
    return None


def encodable(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers with undecodable values as text, so that a copy can be published."""

    def clean(value: Any) -> Any:
        if isinstance(value, UndecodableTimestamp):
            return f"timestamp {int(value)}"
        if isinstance(value, UndecodableText):
            return str.__str__(value)  # the replaced text: valid UTF-8
        if isinstance(value, dict):
            return {clean(key): clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        return value

    return {clean(key): clean(value) for key, value in headers.items()}


def unreadable(message: Any) -> str | None:
    """Why a delivered message cannot be taken as it is (see `undecodable`), or None."""
    if not _made_any:
        return None
    info = getattr(message, "delivery_info", None) or {}
    properties = {
        **(message.properties or {}),
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "routing key": info.get("routing_key"),
        "exchange": info.get("exchange"),
    }
    return undecodable(message.headers, properties)
