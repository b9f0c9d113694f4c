"""Chat rooms end to end: members talk through the durable pipeline, the server says who
sent what, and everyone else is kept out."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from autobahn.wamp.exception import ApplicationError

from harness.processes import Router
from harness.raw_wamp import RawWamp
from tests.support.browser import Browser
from tests.support.proxy import Proxy

SEND, HERE, SINCE = "tidings.chat.send", "tidings.presence.here", "tidings.history.since"
CALL = 48


def member(router: Router, user: str, room: str, *rooms: str, listen: bool = True) -> Browser:
    perms = [f"chat:{r}:join" for r in (room, *rooms)]
    topics = [f"tidings.chat.{room}", f"tidings.presence.chat.{room}"] if listen else []
    return Browser(router.ws_url, user, topics, perms).start()


def refusal(call: Callable[[], Any]) -> str:
    with pytest.raises(ApplicationError) as refused:
        call()
    return str(refused.value.error)


def test_two_members_talk_and_the_server_says_who_sent(router, worker):
    room = f"r{uuid.uuid4().hex[:8]}"
    topic = f"tidings.chat.{room}"
    alice = member(router, "1", room)
    bob = member(router, "2", room)
    try:
        # Bob's arrival is announced to Alice; both are in the room.
        assert alice.wait_on(f"tidings.presence.chat.{room}", 1) == [
            {"user": "2", "state": "joined"}
        ]
        assert alice.call(HERE, topic) == ["1", "2"]
        sent = alice.call(SEND, room, "hello <b>Bob</b>")
        (got,) = bob.wait_on(topic, 1)
        assert got["event_id"] == sent["event_id"]
        assert {k: got[k] for k in ("room", "from", "text")} == {
            "room": room,
            "from": "1",
            "text": "hello <b>Bob</b>",
        }
        assert got["at"].endswith("Z")  # UTC, as every event's time
        bob.call(SEND, room, "hi Alice")
        assert [m["text"] for m in alice.wait_on(topic, 2)] == ["hello <b>Bob</b>", "hi Alice"]
        # A client cannot say who it is: `from` is no argument of send.
        assert refusal(lambda: bob.call(SEND, room, "x", **{"from": "1"})) == (
            "tidings.error.invalid_argument"
        )
        # A member who comes later gets the recent messages from the history.
        dave = member(router, "4", room)
        try:
            recent = dave.call(SINCE, topic, None)
            assert [(m["from"], m["text"]) for m in recent] == [
                ("1", "hello <b>Bob</b>"),
                ("2", "hi Alice"),
            ]
        finally:
            dave.close()
    finally:
        alice.close()
        bob.close()


def test_a_non_member_neither_hears_nor_speaks(router, worker):
    room = f"r{uuid.uuid4().hex[:8]}"
    carol = member(router, "3", "elsewhere", listen=False)
    try:
        for topic in (f"tidings.chat.{room}", f"tidings.presence.chat.{room}"):
            assert refusal(lambda t=topic: carol.subscribe(t)) == "tidings.error.not_authorized"
        assert refusal(lambda: carol.call(SEND, room, "let me in")) == (
            "tidings.error.not_authorized"
        )
        assert refusal(lambda: carol.call(HERE, f"tidings.chat.{room}")) == (
            "tidings.error.not_authorized"
        )
        assert refusal(lambda: carol.call(SINCE, f"tidings.chat.{room}", None)) == (
            "tidings.error.not_authorized"
        )
    finally:
        carol.close()


def test_size_and_rate_are_bounded(tmp_path, broker_url, worker):
    router = Router(tmp_path, TIDINGS_CHAT_RATE="1", TIDINGS_BROKER_URL=broker_url).start()
    room = f"r{uuid.uuid4().hex[:8]}"
    alice = member(router, "1", room, listen=False)
    try:
        assert alice.call(SEND, room, "é" * 2048)["event_id"]  # 4,096 bytes: the most
        assert refusal(lambda: alice.call(SEND, room, "x" * 4097)) == (
            "tidings.error.invalid_argument"
        )
        for bad in ("", "   ", 42, None):
            assert refusal(lambda b=bad: alice.call(SEND, room, b)) == (
                "tidings.error.invalid_argument"
            )
        assert refusal(lambda: alice.call(SEND, "no.dots", "x")) == (
            "tidings.error.invalid_argument"
        )
        # One a second, two in a burst, over all of Alice's tabs.
        second_tab = member(router, "1", room, listen=False)
        try:
            answers = []
            for browser in (alice, second_tab, alice):
                try:
                    answers.append(browser.call(SEND, room, "quick")["event_id"])
                except ApplicationError as exc:
                    answers.append(str(exc.error))
            assert answers[-1] == "tidings.error.rate_limited", answers
            time.sleep(1.1)  # the rate refills: not a wait for an event
            assert second_tab.call(SEND, room, "later")["event_id"]
        finally:
            second_tab.close()
    finally:
        alice.close()
        router.stop()


def test_a_sender_gone_before_the_answer_leaves_nothing_behind(tmp_path, broker_url):
    # Before: the caller's leaving made Crossbar send the chat component an
    # INTERRUPT it could not take; the caller's session was never detached (171
    # of 200 such sessions stayed in the router for good).
    parts = urlsplit(broker_url)
    link = Proxy(parts.port or 5672).start()
    credentials = f"{parts.username}:{parts.password}"
    via_link = urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{link.port}"))
    router = Router(tmp_path, TIDINGS_BROKER_URL=via_link).start()
    room = f"r{uuid.uuid4().hex[:8]}"
    try:
        alice = member(router, "1", room, listen=False)
        try:
            assert alice.call(SEND, room, "the broker answers")["event_id"]
        finally:
            alice.close()
        link.stall()  # from now on the broker never confirms
        for n in range(5):
            client = RawWamp(router.ws_url).open()
            client.join("2", [f"chat:{room}:join"])
            client.send([CALL, 1, {}, SEND, [room, f"left at once {n}"]])
            client.close()
        # The component answers (unavailable) once its confirm times out, to no one.
        assert router.log is not None
        router.log.wait_for("chat message not queued", 15, router.alive)
        assert "unhandled message" not in "\n".join(router.log.lines)
    finally:
        link.close()
        router.stop()
