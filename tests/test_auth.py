"""Authentication: browsers with one-time JWT tickets, the backend with WAMP-CRA."""

from __future__ import annotations

import time

import jwt
import pytest

from publisher.connection import Credentials, WampConnection
from tests.support.clients import ticket
from tests.support.processes import TEST_SECRET
from tidings.settings import BACKEND_AUTHID, REALM


def refusal(url: str, credentials: Credentials, timeout: float = 5) -> str:
    """Connect once and return the router's refusal (error URI and message)."""
    conn = WampConnection(url, REALM, credentials, name="test-refused").start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn.is_joined:
                raise AssertionError("the router accepted credentials it should refuse")
            if conn.last_error:
                return conn.last_error
            time.sleep(0.02)
        raise AssertionError("no answer from the router")
    finally:
        conn.close()


def forged(claims: dict, key: str = TEST_SECRET, alg: str = "HS256") -> str:
    base = {"sub": "7", "exp": int(time.time()) + 60, "jti": f"j-{time.monotonic_ns()}"}
    return jwt.encode({**base, **claims}, key, algorithm=alg)


BAD_TICKETS = {
    "wrong key": (
        lambda: forged({}, key="another-key-of-32-bytes-or-more-000"),
        "tidings.error.invalid_ticket",
    ),
    "expired": (lambda: forged({"exp": int(time.time()) - 60}), "tidings.error.ticket_expired"),
    "garbage": (lambda: "not-a-ticket", "tidings.error.invalid_ticket"),
    "no jti": (
        lambda: jwt.encode(
            {"sub": "7", "exp": int(time.time()) + 60}, TEST_SECRET, algorithm="HS256"
        ),
        "tidings.error.invalid_ticket",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TICKETS))
def test_bad_ticket_is_refused_with_a_tidings_error(router, case):
    make, expected = BAD_TICKETS[case]
    error = refusal(router.ws_url, Credentials(None, "ticket", make()))
    assert error.startswith(expected + ":"), error


def test_a_ticket_works_once(router):
    once = ticket("7")
    conn = WampConnection(router.ws_url, REALM, Credentials(None, "ticket", once)).start()
    try:
        session = conn.wait_joined(5)
        assert session._authid == "7"
        assert session._authrole == "frontend"
    finally:
        conn.close()
    error = refusal(router.ws_url, Credentials(None, "ticket", once))
    assert error.startswith("tidings.error.ticket_used:"), error


def test_wrong_backend_secret_is_refused(router):
    error = refusal(router.rs_url, Credentials(BACKEND_AUTHID, "wampcra", "wrong-secret"))
    assert "not_authorized" in error or "authentication_failed" in error, error


def test_anonymous_access_is_refused(router):
    for url in (router.ws_url, router.rs_url):
        error = refusal(url, Credentials(None, "anonymous", ""))
        assert error.startswith("wamp.error.no_auth_method:"), error
