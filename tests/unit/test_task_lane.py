"""The consumer's fast lane takes a tidings task's message past Celery's per-message machinery."""

from __future__ import annotations

from typing import Any

import pytest
from celery.worker.consumer import Consumer as CeleryConsumer

from workers import celery_consumer
from workers.celery_consumer import Consumer


class Message:
    def __init__(self, headers: Any) -> None:
        self.headers = headers


class Ledger:
    """Records what the consumer dead-letters (`dead_letter_task`, `refuse`)."""

    def __init__(self) -> None:
        self.dead: list[tuple[Any, str]] = []
        self.held: set[int] = set()  # messages Celery's path put in line

    def ready(self) -> bool:
        return True

    def open(self, message: Any, queue: str, call: Any = None) -> Any:
        return message

    def fail(self, message: Any, error: BaseException) -> None:
        self.dead.append((message, str(error)))

    def refuse(self, message: Any, error: BaseException) -> bool:
        if id(message) not in self.held:
            return False
        self.fail(message, error)
        return True


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Ledger:
    fake = Ledger()
    monkeypatch.setattr(celery_consumer, "worker_ledger", fake)
    return fake


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> tuple[Consumer, list[Any], list[Any]]:
    through_celery: list[Any] = []

    def celery_handler(self: Any, promise: Any = None) -> Any:
        def handle(message: Message) -> None:
            through_celery.append(message)
            if message.headers and message.headers.get("id") == "celery-raises":
                ledger.held.add(id(message))
                raise KeyError("timelimit")

        return handle

    monkeypatch.setattr(CeleryConsumer, "create_task_handler", celery_handler)
    consumer = Consumer.__new__(Consumer)
    consumer.on_task_message = set()
    laned: list[Any] = []

    def lane(message: Message) -> bool:
        laned.append(message)
        return message.headers.get("id") != "needs-celery"

    consumer.in_line = {"tidings.publish": lane}
    return consumer, laned, through_celery


def test_a_tidings_task_goes_the_fast_lane_and_celery_never_sees_it(wired) -> None:
    consumer, laned, through_celery = wired
    handler = consumer.create_task_handler()
    message = Message({"task": "tidings.publish", "id": "1"})
    handler(message)
    assert laned == [message] and through_celery == []


@pytest.mark.parametrize(
    "headers",
    [
        {"task": "tidings.publish", "id": "needs-celery"},  # the lane declines it
        {"task": "other.task", "id": "2"},
        {"id": "protocol-1"},
        None,
    ],
)
def test_everything_else_goes_to_celery(wired, headers) -> None:
    consumer, _, through_celery = wired
    message = Message(headers)
    consumer.create_task_handler()(message)
    assert through_celery == [message]


def test_with_someone_watching_task_messages_every_one_goes_to_celery(wired) -> None:
    consumer, laned, through_celery = wired
    consumer.on_task_message.add(lambda *_: None)  # e.g. the autoscaler
    message = Message({"task": "tidings.publish", "id": "1"})
    consumer.create_task_handler()(message)
    assert laned == [] and through_celery == [message]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"task": ["tidings.publish"], "id": "1"}, "the 'task' header must be text, not list"),
        ({"task": "tidings.publish", "id": {"m": 1}}, "the 'id' header must be text, not dict"),
    ],
)
def test_a_task_or_id_header_that_is_not_text_is_dead_lettered(wired, ledger, headers, reason):
    consumer, laned, through_celery = wired
    message = Message(headers)
    consumer.create_task_handler()(message)
    assert ledger.dead == [(message, reason)]
    assert laned == [] and through_celery == []


def test_what_celery_raises_on_is_dead_lettered_not_left_unacked(wired, ledger) -> None:
    consumer, _, _ = wired
    message = Message({"task": "other.task", "id": "celery-raises"})
    consumer.create_task_handler()(message)
    assert ledger.dead == [
        (message, "Celery could not take the task message: KeyError('timelimit')")
    ]
