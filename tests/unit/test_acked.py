"""The future of one publish: waits, timeouts, cancelling and callbacks across threads."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, InvalidStateError

import pytest

from publisher.acked import Acked


def test_a_waiting_thread_gets_the_acknowledgement_from_another():
    acked = Acked()
    threading.Timer(0.05, acked.set_result).start()
    assert acked.result(timeout=5) is None
    assert acked.done() and not acked.cancelled()


def test_a_refusal_is_raised_to_the_waiter_and_given_to_callbacks():
    acked, seen = Acked(), []
    acked.add_done_callback(lambda f: seen.append(f.exception()))
    refusal = RuntimeError("refused")
    acked.set_exception(refusal)
    with pytest.raises(RuntimeError, match="refused"):
        acked.result(timeout=0)
    assert seen == [refusal]
    late = []
    acked.add_done_callback(lambda f: late.append(f.exception()))  # runs at once
    assert late == [refusal]


def test_a_timeout_leaves_it_pending_and_cancel_stops_it():
    acked, seen = Acked(), []
    acked.add_done_callback(lambda f: seen.append(f.cancelled()))
    with pytest.raises(TimeoutError):
        acked.result(timeout=0.01)
    assert not acked.done()
    assert acked.cancel() and acked.cancel()  # cancelling twice is fine
    assert seen == [True]
    with pytest.raises(CancelledError):
        acked.result()


def test_completing_after_cancel_or_twice_is_refused():
    cancelled = Acked()
    cancelled.cancel()
    with pytest.raises(InvalidStateError):
        cancelled.set_result()
    done = Acked()
    done.set_result()
    assert not done.cancel()
    with pytest.raises(InvalidStateError):
        done.set_exception(RuntimeError())


def test_a_failing_callback_does_not_stop_the_others():
    acked, seen = Acked(), []
    acked.add_done_callback(lambda f: 1 / 0)
    acked.add_done_callback(lambda f: seen.append("second"))
    acked.set_result()
    assert seen == ["second"]
