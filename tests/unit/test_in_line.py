"""Tasks that are not tidings' own keep their places in the ledger's line: acks stay batched."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import InvalidTaskError
from kombu.exceptions import ContentDisallowed, DecodeError

from tests.unit.test_ledger import Channel, Hub, Letters, Message, publish
from workers import inline
from workers.ledger import Ledger


class CeleryMessage(Message):
    def ack_log_error(self, logger: Any, errors: Any, multiple: bool = False) -> None:
        self.ack(multiple)


class RejectingMessage(CeleryMessage):
    def reject_log_error(self, logger: Any, errors: Any, requeue: bool = False) -> None:
        self.reject(requeue)


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> tuple[Ledger, Hub, list[Any]]:
    """`in_line` over a ledger of fakes; Celery's own path records what it was given."""
    ledger = Ledger(Letters(), max_redeliveries=3)  # type: ignore[arg-type]
    hub = Hub()
    ledger.use_hub(hub)
    hub.run()
    handed: list[Any] = []

    def celery_way(*_: Any, **__: Any) -> Any:
        return lambda message, body, ack, reject, callbacks, **kw: handed.append((message, ack))

    monkeypatch.setattr(inline, "default", celery_way)
    monkeypatch.setattr(inline, "open_ledger", lambda hub_: ledger)
    return ledger, hub, handed


def test_every_other_task_of_the_app_goes_in_line() -> None:
    from workers.celery_app import app

    app.loader.import_default_modules()

    @app.task(name="tests.other", shared=False)
    def other() -> None: ...

    assert other.Strategy == "workers.inline:in_line"
    assert app.tasks["celery.chord_unlock"].Strategy == "workers.inline:in_line"
    assert app.tasks["tidings.publish"].Strategy == "workers.inline:strategy"


def test_acks_are_batched_again_once_another_task_is_settled(wired) -> None:
    ledger, hub, handed = wired
    channel = Channel()
    handle = inline.in_line(object(), object(), SimpleNamespace(hub=hub))
    for future in publish(ledger, channel, 1) + publish(ledger, channel, 2):
        future.set_result(None)
    handle(CeleryMessage(channel, 3), None, None, None, None)  # Celery runs it in its pool
    for future in publish(ledger, channel, 4) + publish(ledger, channel, 5):
        future.set_result(None)
    hub.run()
    assert channel.acks == [(2, True), (4, False), (5, False)]  # one by one while it runs
    (_, ack), *_ = handed
    ack(None, ())  # the pool is done with it: Celery acks it, on the consumer's loop
    hub.run()
    for future in publish(ledger, channel, 6) + publish(ledger, channel, 7):
        future.set_result(None)
    hub.run()
    assert channel.acks[3:] == [(3, False), (7, True)]


def test_a_message_the_ledger_never_saw_makes_it_ack_one_by_one(wired) -> None:
    # What `in_line` is for: without it, the unseen tag is a gap for good.
    ledger, hub, _ = wired
    channel = Channel()
    publish(ledger, channel, 1)[0].set_result(None)
    for tag in (3, 4, 5):  # tag 2 went to a task Celery ran without the ledger
        publish(ledger, channel, tag)[0].set_result(None)
    hub.run()
    assert channel.acks == [(1, True), (3, False), (4, False), (5, False)]


def _ledger() -> tuple[Letters, Ledger, Hub]:
    letters = Letters()
    ledger = Ledger(letters, max_redeliveries=3)  # type: ignore[arg-type]
    hub = Hub()
    ledger.use_hub(hub)
    hub.run()
    return letters, ledger, hub


@pytest.mark.parametrize("error", [InvalidTaskError, ContentDisallowed, DecodeError])
def test_a_task_celery_refuses_is_dead_lettered_in_its_turn(error, monkeypatch) -> None:
    letters, ledger, hub = _ledger()

    def refusing(*_: Any, **__: Any) -> Any:
        def run(*_: Any, **__: Any) -> None:
            raise error("an eta that is not a date")

        return run

    monkeypatch.setattr(inline, "default", refusing)
    monkeypatch.setattr(inline, "open_ledger", lambda hub_: ledger)
    channel = Channel()
    handle = inline.in_line(object(), object(), SimpleNamespace(hub=hub))
    first = publish(ledger, channel, 1)[0]
    handle(CeleryMessage(channel, 2), None, None, None, None)  # Celery would have dropped it
    for future in publish(ledger, channel, 3) + publish(ledger, channel, 4):
        future.set_result(None)
    hub.run()
    assert channel.acks == []  # nothing past the first, still unanswered
    first.set_result(None)
    hub.run()
    assert letters.dead == [(2, "Celery refused the task: an eta that is not a date")]
    # The refused one acked alone once its copy is kept; the others in runs.
    assert channel.acks == [(1, True), (2, False), (4, True)]
    assert channel.rejects == []
    assert not ledger._foreign and len(ledger) == 0


@pytest.mark.parametrize("requeue", [False, True])
def test_a_task_celery_rejects_is_dead_lettered_unless_requeued(requeue, monkeypatch) -> None:
    letters, ledger, hub = _ledger()

    def rejecting(*_: Any, **__: Any) -> Any:
        # As Celery's strategy does with an ETA no date can hold.
        return lambda message, body, ack, reject, callbacks: reject(None, (), requeue)

    monkeypatch.setattr(inline, "default", rejecting)
    monkeypatch.setattr(inline, "open_ledger", lambda hub_: ledger)
    channel = Channel()
    handle = inline.in_line(object(), object(), SimpleNamespace(hub=hub))
    handle(RejectingMessage(channel, 1), None, None, None, None)
    hub.run()
    if requeue:
        assert channel.rejects == [(1, True)] and letters.dead == []
    else:
        assert channel.rejects == [] and channel.acks == [(1, False)]
        assert letters.dead == [(1, inline.REJECTED)]
    assert not ledger._foreign and len(ledger) == 0
