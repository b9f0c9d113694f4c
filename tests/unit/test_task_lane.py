"""The consumer's fast lane takes a tidings task's message past Celery's per-message machinery."""

from __future__ import annotations

from typing import Any

import pytest
from celery.worker.consumer import Consumer as CeleryConsumer

from workers.celery_consumer import Consumer


class Message:
    def __init__(self, headers: Any) -> None:
        self.headers = headers


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> tuple[Consumer, list[Any], list[Any]]:
    through_celery: list[Any] = []
    monkeypatch.setattr(
        CeleryConsumer, "create_task_handler", lambda self, promise=None: through_celery.append
    )
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
        {"task": ["not", "a", "name"], "id": "3"},
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
