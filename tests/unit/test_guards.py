"""The router's per-session call gate: a rate, and a bound on calls waiting for an answer."""

from __future__ import annotations

from types import SimpleNamespace

from autobahn.wamp import message

from router import guards
from tidings.settings import Limits


class Session:
    """Stands for a router session: the gate keys its state by the object."""


def call(request: int) -> message.Call:
    return message.Call(request, "tidings.maintenance.status")


def test_calls_waiting_for_an_answer_are_bounded_and_freed_by_the_answer():
    limits = Limits(call_rate=1000.0, calls_in_flight=2)
    session = Session()
    assert guards._call_refusal(limits, session, call(1)) is None
    assert guards._call_refusal(limits, session, call(2)) is None
    uri, why = guards._call_refusal(limits, session, call(3)) or ("", "")
    assert uri == "tidings.error.rate_limited" and "2 calls waiting" in why
    guards._answered(session, message.Result(1, args=[{}]))
    assert guards._call_refusal(limits, session, call(4)) is None
    guards._answered(session, message.Error(message.Call.MESSAGE_TYPE, 2, "tidings.error.x"))
    guards._answered(session, message.Error(message.Call.MESSAGE_TYPE, 4, "tidings.error.x"))
    assert guards._call_refusal(limits, session, call(5)) is None


def test_calls_beyond_the_rate_are_refused_and_the_rate_refills():
    limits = Limits(call_rate=5.0, calls_in_flight=1000)
    session = Session()
    answers = [guards._call_refusal(limits, session, call(n)) for n in range(20)]
    assert answers[:10] == [None] * 10  # a burst of twice the rate
    assert all(a and a[0] == "tidings.error.rate_limited" for a in answers[10:])
    state = guards._browsers[session]
    state.stamp -= 1.0  # a second later
    assert guards._call_refusal(limits, session, call(99)) is None


def test_an_address_is_the_peer_or_behind_a_local_proxy_the_forwarded_one():
    def transport(host: str, forwarded: str | None = None) -> SimpleNamespace:
        headers = {"x-forwarded-for": forwarded} if forwarded else {}
        peer = SimpleNamespace(host=host)
        return SimpleNamespace(
            http_headers=headers, transport=SimpleNamespace(getPeer=lambda: peer)
        )

    assert guards._address(transport("203.0.113.5")) == "203.0.113.5"
    assert guards._address(transport("203.0.113.5", "198.51.100.1")) == "203.0.113.5"
    assert guards._address(transport("127.0.0.1", "10.0.0.1, 198.51.100.1")) == "198.51.100.1"
    assert guards._address(transport("127.0.0.1")) is None  # a local tool
    assert guards._address(SimpleNamespace()) is None  # RawSocket: the backend
