"""The router's per-session limits and what browsers are told, on fake sessions and messages."""

from __future__ import annotations

from types import SimpleNamespace

from autobahn.wamp import message, role

from router import connection_limits, outgoing, session_limits
from tidings.settings import Limits


class Session:
    """Stands for a router session: the limits key their state by the object."""

    _session_id = 1
    _authid = "7"
    _transport = None


class Router:
    def __init__(self) -> None:
        self._broker = SimpleNamespace(_session_to_subscriptions={})


def call(request: int) -> message.Call:
    return message.Call(request, "tidings.maintenance.status")


def refusal(limits: Limits, session: Session, msg: object) -> str | None:
    found = session_limits.refusal(limits, Router(), session, msg)
    return found[0] if found else None


def test_calls_waiting_for_an_answer_are_bounded_and_freed_by_the_answer():
    limits = Limits(call_rate=1000.0, calls_in_flight=2)
    session = Session()
    assert refusal(limits, session, call(1)) is None
    assert refusal(limits, session, call(2)) is None
    assert refusal(limits, session, call(3)) == "tidings.error.rate_limited"
    session_limits.answered(limits, session, message.Result(1, args=[{}]))
    assert refusal(limits, session, call(4)) is None
    session_limits.answered(limits, session, message.Error(message.Call.MESSAGE_TYPE, 2, "x.y"))
    session_limits.answered(limits, session, message.Error(message.Call.MESSAGE_TYPE, 4, "x.y"))
    assert refusal(limits, session, call(5)) is None


def test_calls_beyond_their_rate_are_refused_and_the_rate_refills():
    limits = Limits(call_rate=5.0, calls_in_flight=1000)
    session = Session()
    answers = [refusal(limits, session, call(n)) for n in range(20)]
    assert answers[:10] == [None] * 10  # a burst of twice the rate
    assert set(answers[10:]) == {"tidings.error.rate_limited"}
    session_limits.browser(limits, session).call_bucket.stamp -= 1.0  # a second later
    assert refusal(limits, session, call(99)) is None


def test_every_message_counts_against_one_rate():
    limits = Limits(message_rate=10.0)
    session = Session()
    subscribe = [message.Subscribe(n, f"tidings.user.{n}") for n in range(30)]
    answers = [refusal(limits, session, msg) for msg in subscribe]
    assert answers[:20] == [None] * 20
    assert set(answers[20:]) == {"tidings.error.rate_limited"}


def test_uris_are_checked_before_crossbar_sees_them():
    limits = Limits()
    session = Session()
    bad = [
        message.Subscribe(1, "tidings..user"),
        message.Subscribe(2, "tidings.user.7 "),
        message.Subscribe(3, "tidings.entity.order..", match="prefix"),
        message.Call(4, "x" * 600),
    ]
    assert {refusal(limits, session, msg) for msg in bad} == {"tidings.error.invalid_argument"}
    good = [
        message.Subscribe(5, "tidings.entity.order.", match="prefix"),
        message.Subscribe(6, "tidings.entity..42", match="wildcard"),
        message.Subscribe(7, "tidings.user.7"),
    ]
    assert {refusal(limits, session, msg) for msg in good} == {None}


def test_browsers_are_told_tidings_errors_and_nothing_of_the_callee():
    error = outgoing.for_browser(
        message.Error(message.Unsubscribe.MESSAGE_TYPE, 1, "wamp.error.no_such_subscription")
    )
    assert error.error == "tidings.error.invalid_argument"
    result = outgoing.for_browser(
        message.Result(2, args=[1], callee=5, callee_authid="x", callee_authrole="backend")
    )
    assert result.callee is None and result.callee_authid is None
    assert outgoing.for_browser(message.Abort("wamp.error.no_auth_method")).reason == (
        "tidings.error.invalid_ticket"
    )
    welcome = outgoing.for_browser(
        message.Welcome(
            1,
            {"broker": role.RoleBrokerFeatures()},
            authid="7",
            authextra={"perms": [], "x_cb_node": "host", "x_cb_pid": 1},
            custom={"x_cb_node": "host", "x_cb_pid": 1},
        )
    )
    assert welcome.custom == {} and welcome.authextra == {"perms": []}
    mine = message.Error(message.Call.MESSAGE_TYPE, 3, "tidings.error.history_gap")
    assert outgoing.for_browser(mine).error == "tidings.error.history_gap"


def test_an_address_is_the_peer_or_behind_a_local_proxy_the_forwarded_one():
    def transport(host: str, forwarded: str | None = None) -> SimpleNamespace:
        headers = {"x-forwarded-for": forwarded} if forwarded else {}
        peer = SimpleNamespace(host=host)
        return SimpleNamespace(
            http_headers=headers, transport=SimpleNamespace(getPeer=lambda: peer)
        )

    address = connection_limits.address_of
    assert address(transport("203.0.113.5")) == "203.0.113.5"
    assert address(transport("203.0.113.5", "198.51.100.1")) == "203.0.113.5"
    assert address(transport("127.0.0.1", "10.0.0.1, 198.51.100.1")) == "198.51.100.1"
    assert address(transport("127.0.0.1")) is None  # a local tool
    assert address(SimpleNamespace()) is None  # RawSocket: the backend


def test_a_session_refused_again_and_again_is_dropped_but_old_refusals_are_forgiven():
    limits = Limits()
    steady, flooder = Session(), Session()
    for _ in range(3 * session_limits.FLOOD):
        session_limits.refused(limits, steady)
        # A refusal every two seconds, for a long time: never a flood.
        session_limits.browser(limits, steady).refused_stamp -= 2.0
    assert not session_limits.browser(limits, steady).dropped
    for _ in range(session_limits.FLOOD):
        session_limits.refused(limits, flooder)
    assert not session_limits.browser(limits, flooder).dropped
    session_limits.refused(limits, flooder)
    assert session_limits.browser(limits, flooder).dropped
