"""A header py-amqp cannot decode must cost its message, not the connection.

py-amqp turns an AMQP timestamp in a header table into a `datetime`, and
raises for one beyond the year 9999. Raised while reading a frame, that
looks like a broken connection: Celery reconnects, RabbitMQ hands the same
message out again, and every later message waits behind it, forever. With
`install()` such a value is decoded as the number it is, marked, so that the
worker dead-letters its message with the reason (`undecodable`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import amqp.serialization


class UndecodableTimestamp(int):
    """A header timestamp (seconds since 1970) that no `datetime` can hold."""

    def replace(self, **_: Any) -> UndecodableTimestamp:
        return self  # py-amqp calls .replace(tzinfo=None) on what it decoded


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


def install() -> None:
    """Decode out-of-range header timestamps instead of raising; idempotent."""
    amqp.serialization.datetime = _TolerantDatetime  # type: ignore[misc]


def undecodable(headers: Any) -> str | None:
    """Why a message's headers cannot be taken as they are, or None."""
    stack = [("", headers)]
    while stack:
        name, value = stack.pop()
        if isinstance(value, UndecodableTimestamp):
            return f"header {name!r} holds a timestamp beyond the year 9999 ({int(value)} s)"
        if isinstance(value, dict):
            stack.extend((str(key), item) for key, item in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((name, item) for item in value)
    return None


def encodable(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers with undecodable values as text, so that a copy can be published."""

    def clean(value: Any) -> Any:
        if isinstance(value, UndecodableTimestamp):
            return f"timestamp {int(value)}"
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        return value

    return {key: clean(value) for key, value in headers.items()}
