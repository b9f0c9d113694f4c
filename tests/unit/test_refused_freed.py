"""A message refused for a body kombu cannot decode is freed when it is settled, not by the
collector: the worker runs it rarely (workers/heap.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kombu.exceptions import DecodeError

from tests.unit.test_in_line import CeleryMessage
from tests.unit.test_ledger import Channel, Hub, Letters
from workers import inline, raw_consumer
from workers.celery_consumer import dead_letter_undecodable
from workers.ledger import Ledger


def _kombus_error(message: Any) -> DecodeError:
    """As kombu's `Message._reraise_error`: the error re-raised from a frame that holds it,
    and the message, as long as its traceback lives."""
    error = DecodeError("Expecting value: line 1 column 1 (char 0)")

    def reraise(value: BaseException) -> None:
        raise value

    try:
        reraise(error)
    except DecodeError as exc:
        return exc
    raise AssertionError("not raised")


def _raw(ledger: Ledger, message: Any, exc: DecodeError, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raw_consumer, "ledger", ledger)
    raw_consumer.RawEventConsumer.on_undecodable(SimpleNamespace(consumed=0), message, exc)


def _task(ledger: Ledger, message: Any, exc: DecodeError, _: pytest.MonkeyPatch) -> None:
    dead_letter_undecodable(ledger, message, exc)


def _through_celery(ledger: Ledger, message: Any, exc: DecodeError, _: pytest.MonkeyPatch) -> None:
    def celery_way(*args: Any, **kwargs: Any) -> None:
        raise exc

    inline._through_celery(ledger, celery_way, None, message, None, None, None, None)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.disable()
    yield
    gc.enable()


Refuse = Callable[[Ledger, Any, DecodeError, pytest.MonkeyPatch], None]


@pytest.mark.usefixtures("collector_off")
@pytest.mark.parametrize(
    "refuse",
    [_raw, _task, _through_celery],
    ids=["raw event", "task in the fast lane", "task through Celery's path"],
)
def test_an_undecodable_message_is_freed_once_dead_lettered(
    refuse: Refuse, monkeypatch: pytest.MonkeyPatch
) -> None:
    letters = Letters()
    ledger = Ledger(letters, max_redeliveries=3)  # type: ignore[arg-type]
    hub = Hub()
    ledger.use_hub(hub)
    message = CeleryMessage(Channel(), 1)
    refuse(ledger, message, _kombus_error(message), monkeypatch)
    hub.run()
    assert letters.dead and "Expecting value" in letters.dead[0][1]
    freed = weakref.ref(message)
    del message
    assert freed() is None
