"""Hostile input, table-driven: every probe gets its exact refusal, and the router stays up
while other sessions keep receiving."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jwt
import pytest
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from harness.clients import Subscriber, attempt, refusal, ticket
from harness.processes import TEST_SECRET
from harness.raw_wamp import RawWamp
from harness.websocket import upgrade_request
from publisher import Publisher
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings.names import REALM
from tidings.settings import Settings

NOT_AUTHORIZED = "tidings.error.not_authorized"
ORDER_VIEW = ["entity:order:view"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "7", "iat": now, "exp": now + 60, "jti": f"j{time.monotonic_ns()}", **extra}


def alg_none() -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims()).encode())}."


def not_json() -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(b'this is not json')}.{_b64(b'sig')}"


TICKETS: dict[str, tuple[Callable[[], str], str]] = {
    "forged": (
        lambda: jwt.encode(_claims(), "x" * 32, algorithm="HS256"),
        "tidings.error.invalid_ticket",
    ),
    "expired": (
        lambda: jwt.encode(_claims(exp=int(time.time()) - 30), TEST_SECRET, algorithm="HS256"),
        "tidings.error.ticket_expired",
    ),
    "future-dated": (
        lambda: jwt.encode(
            _claims(iat=int(time.time()) + 600, exp=int(time.time()) + 900),
            TEST_SECRET,
            algorithm="HS256",
        ),
        "tidings.error.invalid_ticket",
    ),
    "too far away": (
        lambda: jwt.encode(_claims(exp=int(time.time()) + 7200), TEST_SECRET, algorithm="HS256"),
        "tidings.error.invalid_ticket",
    ),
    "alg none": (alg_none, "tidings.error.invalid_ticket"),
    "alg HS512": (
        lambda: jwt.encode(
            _claims(), TEST_SECRET + "-longer-key-for-hs512-" * 3, algorithm="HS512"
        ),
        "tidings.error.invalid_ticket",
    ),
    "oversized": (
        lambda: jwt.encode(_claims(pad="x" * 20000), TEST_SECRET, algorithm="HS256"),
        "tidings.error.invalid_ticket",
    ),
    "not json": (not_json, "tidings.error.invalid_ticket"),
    "garbage": (lambda: "not-a-ticket", "tidings.error.invalid_ticket"),
    "no jti": (
        lambda: jwt.encode(
            {"sub": "7", "exp": int(time.time()) + 60}, TEST_SECRET, algorithm="HS256"
        ),
        "tidings.error.invalid_ticket",
    ),
    "dotted user": (
        lambda: jwt.encode(_claims(sub="7.admin"), TEST_SECRET, algorithm="HS256"),
        "tidings.error.invalid_ticket",
    ),
}


@pytest.fixture(scope="module")
def bystander(router, worker):
    """A well-behaved session that must keep receiving whatever the probes do."""
    sub = Subscriber(router.ws_url, "99", ["tidings.user.99"]).start()
    publisher = Publisher(replace(Settings.from_environ(os.environ), router_url=router.rs_url))
    publisher.start()
    yield sub, publisher
    sub.close()
    publisher.close()


def assert_bystander_ok(router, bystander) -> None:
    sub, publisher = bystander
    before = len(sub.payloads())
    publisher.publish("tidings.user.99", {"still": "here"}, timeout=10)
    sub.wait_count(before + 1)
    assert router.alive()


@pytest.mark.parametrize("case", sorted(TICKETS))
def test_bad_ticket(router, bystander, case):
    make, expected = TICKETS[case]
    error = refusal(router.ws_url, Credentials(None, "ticket", make()))
    assert error.split(":")[0] == expected, error
    assert_bystander_ok(router, bystander)


def test_replayed_ticket(router, bystander):
    once = ticket("7")
    conn = WampConnection(router.ws_url, REALM, Credentials(None, "ticket", once)).start()
    conn.wait_joined(5)
    conn.close()
    error = refusal(router.ws_url, Credentials(None, "ticket", once))
    assert error.split(":")[0] == "tidings.error.ticket_used", error
    assert_bystander_ok(router, bystander)


def _wildcard(match: str) -> SubscribeOptions:
    return SubscribeOptions(match=match)


# name: (what the browser tries, the exact refusal or None where it is allowed)
ACTIONS: dict[str, tuple[Callable[[Any], Any], str | None]] = {
    "subscribe own user topic": (lambda s: s.subscribe(print, "tidings.user.7"), None),
    "subscribe another user's topic": (
        lambda s: s.subscribe(print, "tidings.user.8"),
        NOT_AUTHORIZED,
    ),
    "subscribe maintenance": (lambda s: s.subscribe(print, "tidings.maintenance"), None),
    "subscribe entity with permission": (
        lambda s: s.subscribe(print, "tidings.entity.order.42"),
        None,
    ),
    "subscribe entity without permission": (
        lambda s: s.subscribe(print, "tidings.entity.invoice.1"),
        NOT_AUTHORIZED,
    ),
    "subscribe collection without permission": (
        lambda s: s.subscribe(print, "tidings.entity.invoice"),
        NOT_AUTHORIZED,
    ),
    "subscribe presence without permission": (
        lambda s: s.subscribe(print, "tidings.presence.invoice.1"),
        NOT_AUTHORIZED,
    ),
    "subscribe a topic outside the catalogue": (
        lambda s: s.subscribe(print, "other.topic"),
        NOT_AUTHORIZED,
    ),
    "prefix tidings.": (
        lambda s: s.subscribe(print, "tidings.", options=_wildcard("prefix")),
        NOT_AUTHORIZED,
    ),
    "prefix tidings.user.": (
        lambda s: s.subscribe(print, "tidings.user.", options=_wildcard("prefix")),
        NOT_AUTHORIZED,
    ),
    "prefix own user topic": (
        lambda s: s.subscribe(print, "tidings.user.7", options=_wildcard("prefix")),
        NOT_AUTHORIZED,
    ),
    "prefix entity with permission": (
        lambda s: s.subscribe(print, "tidings.entity.order.", options=_wildcard("prefix")),
        None,
    ),
    "prefix entity name without dot": (
        lambda s: s.subscribe(print, "tidings.entity.order", options=_wildcard("prefix")),
        NOT_AUTHORIZED,
    ),
    "wildcard any entity": (
        lambda s: s.subscribe(print, "tidings.entity..42", options=_wildcard("wildcard")),
        NOT_AUTHORIZED,
    ),
    "wildcard any user": (
        lambda s: s.subscribe(print, "tidings.user.", options=_wildcard("wildcard")),
        NOT_AUTHORIZED,
    ),
    "wildcard ids of a permitted entity": (
        lambda s: s.subscribe(print, "tidings.entity.order.", options=_wildcard("wildcard")),
        None,
    ),
    "publish maintenance": (
        lambda s: s.publish(
            "tidings.maintenance", {"enabled": True}, options=PublishOptions(acknowledge=True)
        ),
        NOT_AUTHORIZED,
    ),
    "publish entity topic": (
        lambda s: s.publish(
            "tidings.entity.order.42", {}, options=PublishOptions(acknowledge=True)
        ),
        NOT_AUTHORIZED,
    ),
    "publish own user topic": (
        lambda s: s.publish("tidings.user.7", {}, options=PublishOptions(acknowledge=True)),
        NOT_AUTHORIZED,
    ),
    "register a procedure": (
        lambda s: s.register(print, "tidings.custom.procedure"),
        NOT_AUTHORIZED,
    ),
    # Crossbar's dealer would report the existing procedure before its denial
    # (it builds the not-authorized reply and then overwrites it); the router's
    # guards refuse a browser's REGISTER before the dealer sees it.
    "register over a public procedure": (
        lambda s: s.register(print, "tidings.entity.editors"),
        NOT_AUTHORIZED,
    ),
    "register outside tidings": (lambda s: s.register(print, "com.example.x"), NOT_AUTHORIZED),
    "call wamp.session.list": (lambda s: s.call("wamp.session.list"), NOT_AUTHORIZED),
    "call wamp.subscription.list": (lambda s: s.call("wamp.subscription.list"), NOT_AUTHORIZED),
    "call the authorizer": (
        lambda s: s.call("tidings.authorize", {}, "x", "call", {}),
        NOT_AUTHORIZED,
    ),
}


@pytest.fixture(scope="module")
def browser(router):
    conn = WampConnection(
        router.ws_url, REALM, Credentials(None, "ticket", lambda: ticket("7", ORDER_VIEW))
    ).start()
    conn.wait_joined(10)
    yield conn
    conn.close()


@pytest.mark.parametrize("case", sorted(ACTIONS))
def test_browser_action(router, bystander, browser, case):
    action, refusal_uri = ACTIONS[case]
    assert attempt(browser, action) == refusal_uri
    assert_bystander_ok(router, bystander)


def raw_handshake(port: int, origin: str | None) -> str:
    """The status line of the router's answer to a WebSocket upgrade from `origin`."""
    request = upgrade_request("127.0.0.1", port)
    if origin is not None:
        request = request[:-2] + f"Origin: {origin}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("http://evil.example", False),
        ("null", False),
        ("http://127.0.0.1:{port}", True),
        (None, True),  # non-browser clients send no Origin
    ],
)
def test_origin_check(router, bystander, origin, accepted):
    if origin:
        origin = origin.format(port=router.web_port)
    status = raw_handshake(router.web_port, origin)
    assert ("101" in status) is accepted, status
    assert_bystander_ok(router, bystander)


def test_oversized_message_closes_only_that_session(router, bystander, browser):
    # One ticket only: once dropped, this session cannot come back by itself.
    big = WampConnection(
        router.ws_url, REALM, Credentials(None, "ticket", ticket("7", ORDER_VIEW))
    ).start()
    try:
        big.wait_joined(10)
        # The router drops the connection; the call never gets an answer.
        error = attempt(
            big,
            lambda s: asyncio.wait_for(s.call("tidings.maintenance.status", "x" * 200_000), 5),
        )
        assert error is not None
        deadline = time.monotonic() + 10
        while big.is_joined and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not big.is_joined, "the router kept a session that sent 200 kB"
    finally:
        big.close()
    assert attempt(browser, lambda s: s.subscribe(print, "tidings.maintenance")) is None
    assert_bystander_ok(router, bystander)


def test_a_message_of_64_kib_is_served_and_one_byte_more_closes_the_session(router, bystander):
    def call_of(size: int) -> list[Any]:
        call: list[Any] = [48, 1, {}, "tidings.maintenance.status", [""]]
        call[4][0] = "x" * (size - len(json.dumps(call)))
        assert len(json.dumps(call).encode()) == size
        return call

    at_limit = RawWamp(router.ws_url).open()
    try:
        at_limit.join("7")
        at_limit.send(call_of(64 * 1024))
        answer = at_limit.read()  # an answer (this procedure takes no argument), not a close
        assert answer[:2] == [8, 48] and answer[4] == "tidings.error.invalid_argument", answer
    finally:
        at_limit.close()
    over = RawWamp(router.ws_url).open()
    try:
        over.join("7")
        over.send(call_of(64 * 1024 + 1))
        assert over.closed_by_router(timeout=10), "the router kept a session past 64 KiB"
    finally:
        over.close()
    assert_bystander_ok(router, bystander)


@pytest.mark.parametrize(
    ("claims", "refused"),
    [
        ({"exp": -4}, None),  # expired 4 s ago by the router's clock: within the skew
        ({"exp": -8}, "tidings.error.ticket_expired"),
        ({"iat": +4, "exp": +60}, None),  # issued 4 s ahead of the router's clock
        ({"iat": +8, "exp": +60}, "tidings.error.invalid_ticket"),
    ],
)
def test_five_seconds_of_clock_skew_are_tolerated_and_no_more(router, claims, refused):
    now = int(time.time())
    made = jwt.encode(
        _claims(**{name: now + delta for name, delta in claims.items()}),
        TEST_SECRET,
        algorithm="HS256",
    )
    if refused is None:
        conn = WampConnection(router.ws_url, REALM, Credentials(None, "ticket", made)).start()
        try:
            conn.wait_joined(10)
        finally:
            conn.close()
    else:
        error = refusal(router.ws_url, Credentials(None, "ticket", made))
        assert error.split(":")[0] == refused, error
