"""Authentication: browsers with one-time JWT tickets, the backend with WAMP-CRA."""

from __future__ import annotations

from harness.clients import refusal, ticket
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings.names import BACKEND_AUTHID, REALM


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
    # A browser is told in tidings' words; the backend's RawSocket in Crossbar's.
    error = refusal(router.ws_url, Credentials(None, "anonymous", ""))
    assert error.startswith("tidings.error.invalid_ticket:"), error
    error = refusal(router.rs_url, Credentials(None, "anonymous", ""))
    assert error.startswith("wamp.error.no_auth_method:"), error
