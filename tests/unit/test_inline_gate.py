"""Which task messages the consumer publishes itself and which go through Celery's pool."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery import signals

from workers.inline import Gate

TASK = SimpleNamespace(name="tidings.publish", send_events=True)
PLAIN = ([["tidings.user.1", {"text": "hi"}], {}, None], {"id": "t1"})


def consumer(**changes: Any) -> SimpleNamespace:
    state = {
        "event_dispatcher": SimpleNamespace(enabled=False, groups=None),
        "controller": SimpleNamespace(state=SimpleNamespace(revoked=set())),
        "task_buckets": {"tidings.publish": None},
        "disable_rate_limits": False,
    }
    state.update(changes)
    return SimpleNamespace(**state)


def test_a_plain_task_is_published_by_the_consumer():
    decoded, headers = PLAIN
    assert not Gate(TASK, consumer()).needs_celery(headers, decoded)


@pytest.mark.parametrize(
    ("why", "headers", "decoded"),
    [
        ("countdown", {"id": "t1", "eta": "2026-12-02T10:00:00Z"}, PLAIN[0]),
        ("expiry", {"id": "t1", "expires": "2026-12-02T10:00:00Z"}, PLAIN[0]),
        ("stamped", {"id": "t1", "stamped_headers": ["x"]}, PLAIN[0]),
        ("chain", {"id": "t1"}, [[], {}, {"chain": [{"task": "x"}]}]),
        ("callbacks", {"id": "t1"}, [[], {}, {"callbacks": [{"task": "x"}]}]),
        ("chord", {"id": "t1"}, [[], {}, {"chord": {"task": "x"}}]),
        ("protocol 1", {"id": "t1"}, None),
        ("args not a list", {"id": "t1"}, ["x", {}, None]),
        ("kwargs not a dict", {"id": "t1"}, [[], [], None]),
        ("embed not a dict", {"id": "t1"}, [[], {}, "x"]),
    ],
)
def test_what_only_celery_does_goes_through_celery(why, headers, decoded):
    assert Gate(TASK, consumer()).needs_celery(headers, decoded), why


def test_a_revoked_task_goes_through_celery_which_drops_it():
    revoked = SimpleNamespace(state=SimpleNamespace(revoked={"t1"}))
    assert Gate(TASK, consumer(controller=revoked)).needs_celery(*reversed(PLAIN))


def test_a_rate_limit_set_while_running_sends_tasks_through_celery():
    buckets: dict[str, Any] = {"tidings.publish": None}
    gate = Gate(TASK, consumer(task_buckets=buckets))
    assert not gate.needs_celery(*reversed(PLAIN))
    buckets["tidings.publish"] = object()  # `celery control rate_limit`
    assert gate.needs_celery(*reversed(PLAIN))
    assert not Gate(TASK, consumer(task_buckets=buckets, disable_rate_limits=True)).needs_celery(
        *reversed(PLAIN)
    )


def test_task_events_switched_on_send_tasks_through_celery():
    eventer = SimpleNamespace(enabled=True, groups={"worker"})  # heartbeats only
    gate = Gate(TASK, consumer(event_dispatcher=eventer))
    assert not gate.needs_celery(*reversed(PLAIN))
    eventer.groups = {"worker", "task"}  # `celery control enable_events`
    assert gate.needs_celery(*reversed(PLAIN))
    eventer.groups = None  # -E: every group
    assert gate.needs_celery(*reversed(PLAIN))


def test_a_receiver_of_task_signals_gets_the_real_thing():
    gate = Gate(TASK, consumer())

    def watcher(**_: Any) -> None:
        pass

    signals.task_prerun.connect(watcher)
    try:
        assert gate.needs_celery(*reversed(PLAIN))
    finally:
        signals.task_prerun.disconnect(watcher)
    assert not gate.needs_celery(*reversed(PLAIN))
