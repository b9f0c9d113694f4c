"""The ledger's order and failure policy, on fake messages: no broker, no router."""

from __future__ import annotations

import gc
import json
import os
import sys
import weakref
from typing import Any

import pytest

from publisher.acked import Acked
from tidings.errors import InvalidEvent, PublishRefused, PublishTimeout
from tidings.names import REDELIVERIES_HEADER
from workers.ledger import Ledger, verdict
from workers.letterbox import TaskCall


class Channel:
    """What the broker saw: acks (tag, multiple) and rejects, in order."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []
        self.rejects: list[tuple[int, bool]] = []
        self.is_open = True
        self.failing = False


class Message:
    def __init__(self, channel: Channel, tag: int, headers: dict[str, Any] | None = None):
        self.channel = channel
        self.delivery_tag = tag
        self.headers = headers or {}
        self.body = b"{}"
        self.delivery_info = {"routing_key": "entity.updated"}
        self.properties: dict[str, Any] = {}
        self.content_type = "application/json"
        self.content_encoding = "utf-8"

    def ack(self, multiple: bool = False) -> None:
        if self.channel.failing:
            raise OSError("channel closed")
        self.channel.acks.append((self.delivery_tag, multiple))

    def reject(self, requeue: bool = False) -> None:
        self.channel.rejects.append((self.delivery_tag, requeue))


class Letters:
    def __init__(self) -> None:
        self.dead: list[tuple[int | None, str]] = []
        self.codes: list[str] = []
        self.handed_back: list[tuple[int, str, int]] = []
        self.broken = False

    def dead_letter(
        self, message: Any, reason: str, task: TaskCall | None = None, code: str = "invalid"
    ) -> None:
        if self.broken:
            raise OSError("broker gone")
        self.dead.append((message.delivery_tag if message else None, reason))
        self.codes.append(code)

    def hand_back(self, message: Any, queue: str, count: int) -> None:
        if self.broken:
            raise OSError("broker gone")
        self.handed_back.append((message.delivery_tag, queue, count))


class Hub:
    """The consumer's loop: callbacks run when the test says so."""

    def __init__(self) -> None:
        self.ready: list[Any] = []

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.ready.append((callback, args))

    def call_repeatedly(self, delay: float, callback: Any) -> None:
        pass

    def run(self) -> None:
        while self.ready:
            callback, args = self.ready.pop(0)
            callback(*args)


@pytest.fixture
def parts() -> tuple[Ledger, Hub, Channel, Letters]:
    letters = Letters()
    ledger = Ledger(letters, max_redeliveries=3)  # type: ignore[arg-type]
    hub = Hub()
    ledger.use_hub(hub)
    hub.run()
    return ledger, hub, Channel(), letters


def publish(ledger: Ledger, channel: Channel, tag: int, count: int = 1, **headers: Any):
    message = Message(channel, tag, headers)
    entry = ledger.open(message, "tidings.events")
    futures = [Acked() for _ in range(count)]
    ledger.expect(entry, futures)
    return futures


def test_a_run_of_acknowledged_messages_is_acked_once_with_multiple(parts):
    ledger, hub, channel, _ = parts
    futures = [publish(ledger, channel, tag)[0] for tag in (1, 2, 3)]
    for future in futures:
        future.set_result()
    hub.run()
    assert channel.acks == [(3, True)]


def test_never_acks_past_a_message_the_router_has_not_acknowledged(parts):
    ledger, hub, channel, _ = parts
    first, second, third = (publish(ledger, channel, tag)[0] for tag in (1, 2, 3))
    second.set_result()
    third.set_result()
    hub.run()
    assert channel.acks == []
    first.set_result()
    hub.run()
    assert channel.acks == [(3, True)]


def test_a_message_with_two_publishes_waits_for_both(parts):
    ledger, hub, channel, _ = parts
    one, two = publish(ledger, channel, 1, count=2)
    one.set_result()
    hub.run()
    assert channel.acks == []
    two.set_result()
    hub.run()
    assert channel.acks == [(1, True)]


def test_a_refusal_is_dead_lettered_with_its_reason_and_acked_alone(parts):
    ledger, hub, channel, letters = parts
    good, bad, after = (publish(ledger, channel, tag)[0] for tag in (1, 2, 3))
    good.set_result()
    bad.set_exception(PublishRefused("router refused 'tidings.user.1': wamp.error.x"))
    after.set_result()
    hub.run()
    assert letters.dead == [(2, "router refused 'tidings.user.1': wamp.error.x")]
    assert letters.codes == ["refused"]
    assert channel.acks == [(1, True), (2, False), (3, True)]


def test_invalid_input_is_dead_lettered_in_its_turn(parts):
    ledger, hub, channel, letters = parts
    first = publish(ledger, channel, 1)[0]
    entry = ledger.open(Message(channel, 2), "tidings.events")
    ledger.fail(entry, InvalidEvent("unknown event type 'x'"))
    hub.run()
    assert letters.dead == [] and channel.acks == []
    first.set_result()
    hub.run()
    assert letters.dead == [(2, "unknown event type 'x'")]
    assert letters.codes == ["invalid"]
    assert channel.acks == [(1, True), (2, False)]


def test_a_passing_failure_is_handed_back_with_its_count_raised(parts):
    ledger, hub, channel, letters = parts
    publish(ledger, channel, 1, **{REDELIVERIES_HEADER: 1})[0].set_exception(
        PublishTimeout("no acknowledgement")
    )
    hub.run()
    assert letters.handed_back == [(1, "tidings.events", 2)]
    assert letters.dead == []
    assert channel.acks == [(1, False)]


def test_after_the_last_redelivery_it_is_dead_lettered_never_looping(parts):
    ledger, hub, channel, letters = parts
    publish(ledger, channel, 1, **{REDELIVERIES_HEADER: 3})[0].set_exception(
        ConnectionError("lost")
    )
    hub.run()
    assert letters.handed_back == []
    assert letters.dead == [(1, "redelivered 3 times; last: ConnectionError: lost")]
    assert letters.codes == ["redeliveries"]
    assert channel.acks == [(1, False)]


def test_a_cancelled_publish_is_handed_back_not_lost(parts):
    ledger, hub, channel, letters = parts
    publish(ledger, channel, 1)[0].cancel()
    hub.run()
    assert letters.handed_back == [(1, "tidings.events", 1)]


def test_when_the_letterbox_fails_the_message_is_requeued_not_acked(parts):
    ledger, hub, channel, letters = parts
    letters.broken = True
    publish(ledger, channel, 1)[0].set_exception(PublishRefused("no"))
    hub.run()
    assert channel.acks == []
    assert channel.rejects == [(1, True)]


def test_after_a_gap_in_delivery_tags_every_message_is_acked_alone(parts):
    ledger, hub, channel, _ = parts
    futures = [publish(ledger, channel, tag)[0] for tag in (1, 2, 5, 6)]
    for future in futures:
        future.set_result()
    hub.run()
    # 3 and 4 never reached the consumer: a multiple ack on 5 or 6 would ack them.
    assert channel.acks == [(2, True), (5, False), (6, False)]


def test_a_message_celery_holds_blocks_no_one_and_is_never_acked_over(parts):
    ledger, hub, channel, _ = parts
    first = publish(ledger, channel, 1)[0]
    held = Message(channel, 2)
    ledger.foreign(held, "tidings", "task-2")  # e.g. a countdown of an hour
    later = [publish(ledger, channel, tag)[0] for tag in (3, 4)]
    for future in (first, *later):
        future.set_result()
    hub.run()
    assert channel.acks == [(1, True), (3, False), (4, False)]
    # Celery acks it: the ledger hears of it after that ack went out.
    ledger.settle_foreign(held, held.ack)
    hub.run()
    publish(ledger, channel, 5)[0].set_result()
    hub.run()
    assert channel.acks[-2:] == [(2, False), (5, True)]


def test_a_task_run_by_the_pool_can_be_adopted_and_is_acked_after_its_publish(parts):
    ledger, hub, channel, _letters = parts
    message = Message(channel, 1)
    ledger.foreign(message, "tidings", "task-1")
    future = Acked()
    assert ledger.adopt(TaskCall("tidings.publish", "task-1", [], {}), [future])
    assert ledger.adopted("task-1") and not ledger.adopted("task-1")
    hub.run()
    assert channel.acks == []
    future.set_result()
    hub.run()
    assert channel.acks == [(1, True)]
    assert not ledger.adopt(TaskCall("tidings.publish", "unknown", [], {}), [])


def test_two_messages_with_one_task_id_are_left_to_celery_then_adopted_again(parts):
    # Before: the second message took the first one's place: acked after the
    # first run's publish, then Celery's own ack of it raised MessageStateError.
    # Which of the two a run belongs to its task id cannot say: Celery settles both.
    ledger, hub, channel, _letters = parts
    first, second = Message(channel, 1), Message(channel, 2)
    ledger.foreign(first, "tidings", "same-id")
    ledger.foreign(second, "tidings", "same-id")
    assert not ledger.adopt(TaskCall("tidings.publish", "same-id", [], {}), [Acked()])
    assert not ledger.adopted("same-id")
    ledger.settle_foreign(first, first.ack)  # Celery acks the first run's own message
    hub.run()
    assert channel.acks == [(1, False)]
    # One left: its run is adopted, and the ledger acks it after the publish.
    future = Acked()
    assert ledger.adopt(TaskCall("tidings.publish", "same-id", [], {}), [future])
    future.set_result()
    hub.run()
    assert ledger.adopted("same-id") and not ledger.adopted("same-id")
    assert channel.acks == [(1, False), (2, False)]
    assert not ledger._tasks and not ledger._foreign


def test_a_dead_channel_costs_no_crash_and_is_forgotten_on_restart(parts):
    ledger, hub, channel, _ = parts
    channel.failing = True
    publish(ledger, channel, 1)[0].set_result()
    hub.run()
    assert channel.acks == []
    publish(ledger, channel, 2)
    channel.is_open = False
    ledger.restart()
    hub.run()
    assert len(ledger) == 0


def test_verdict_by_class_not_by_message():
    assert verdict(None, 0, 5) == ("ack", "")
    assert verdict(InvalidEvent("bad"), 9, 5) == ("dead-letter", "bad")
    assert verdict(PublishTimeout("slow"), 0, 5)[0] == "hand back"
    assert verdict(PublishTimeout("slow"), 5, 5) == (
        "dead-letter",
        "redelivered 5 times; last: PublishTimeout: slow",
    )


def test_a_forked_child_cannot_settle_its_parents_messages(parts) -> None:
    # A prefork child cannot reach the parent's channel: it must leave settling
    # to the parent (Celery's own path), though it inherits the ledger.
    ledger, *_ = parts
    assert ledger.ready()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave without running anything of pytest's
        os.write(write, b"1" if ledger.ready() else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"0"
    assert ledger.ready()


def _refused(ledger: Ledger, channel: Channel, tag: int) -> weakref.ref[Message]:
    """A message refused as the consumers refuse one: the ledger fails it from inside the
    handler, with an error raised while another was handled, kombu's own decode error
    kept on the message; a weak reference to it."""
    message = Message(channel, tag)
    try:
        raise ValueError("Unterminated string")  # kombu's, kept with its traceback
    except ValueError:
        message.errors = [sys.exc_info()]  # type: ignore[attr-defined]
    entry = ledger.open(message, "tidings.events")
    try:
        try:
            json.loads("{")
        except ValueError as exc:
            raise InvalidEvent(f"not JSON: {exc}") from None
    except InvalidEvent as exc:
        ledger.fail(entry, exc)
    return weakref.ref(message)


def test_a_refused_message_is_freed_as_soon_as_it_is_settled_not_by_the_collector(parts):
    # The worker collects reference cycles rarely (workers/heap.py): a traceback kept
    # with a refused message would hold its frames and the message, body and all.
    ledger, hub, channel, letters = parts
    gc.disable()
    try:
        refs = [_refused(ledger, channel, tag) for tag in (1, 2, 3)]
        hub.run()
        assert [tag for tag, _ in letters.dead] == [1, 2, 3]
        assert [ref() for ref in refs] == [None, None, None]
    finally:
        gc.enable()
