"""Which task messages the consumer publishes itself and which go through Celery's pool;
how it decodes their bodies."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery import signals
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message

from workers.inline import Gate, payload

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


def _message(body: Any, content_type: str = "application/json", accept: Any = None) -> Message:
    message = Message(body=body, content_type=content_type, content_encoding="utf-8")
    message.accept = accept
    return message


@pytest.mark.parametrize(
    "body",
    [
        '[["tidings.user.1", {"text": "é"}], {}, {"chain": null}]',
        '{"__type__": "datetime", "__value__": "2026-12-03T10:00:00"}',  # kombu's own types
        '{"__type__": "uuid", "__value__": {"hex": "6c1f0c8a5d3e4b8e9a573f1f5b2a9e10"}}',
        '[["t", {"\\u005f_type__": "datetime", "__value__": "2026-12-03T10:00:00"}], {}, {}]',
        '[["t", {"n": 18446744073709551616, "m": -9223372036854775809}], {}, {}]',
        '[["t", {"x": NaN, "y": 1e400}], {}, {}]',
        '[["\\ud800"], {}, {}]',
        "",
    ],
)
def test_a_task_body_decodes_as_kombu_decodes_it(body: str) -> None:
    # Compared on repr: NaN is not equal to itself.
    assert repr(payload(_message(body))) == repr(_message(body).payload)
    assert type(payload(_message(body))) is type(_message(body).payload)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (_message("[1, 2"), DecodeError),
        (_message('{"__type__": "nothing", "__value__": 1}'), DecodeError),
        (_message("[1]", accept={"application/x-yaml"}), ContentDisallowed),
        (_message("1", content_type="application/x-python-serialize"), ContentDisallowed),
    ],
)
def test_a_task_body_kombu_refuses_is_refused_with_kombus_error(
    message: Message, error: type
) -> None:
    with pytest.raises(error):
        payload(message)
