"""One-time tickets across router restarts and several routers, with the Redis store."""

from __future__ import annotations

import time
import uuid

import pytest

from harness.clients import refusal, ticket
from harness.processes import Router
from harness.redis_server import redis_server
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from stores.jti import MemoryJtiStore, RedisJtiStore
from tidings.names import REALM


@pytest.fixture
def redis_url():
    """A Redis of this test's own, on a free port, never the machine's."""
    with redis_server() as server:
        yield server.url


def test_memory_store_refuses_a_second_claim_until_expiry():
    store = MemoryJtiStore()
    assert store.claim("a", ttl=60)
    assert not store.claim("a", ttl=60)
    assert store.claim("b", ttl=0.001)
    time.sleep(0.01)
    assert store.claim("b", ttl=60), "an expired entry must not block forever"


def test_redis_store_is_shared(redis_url):
    jti = str(uuid.uuid4())
    first, second = RedisJtiStore(redis_url), RedisJtiStore(redis_url)
    assert first.claim(jti, ttl=5)
    assert not second.claim(jti, ttl=5)


def test_a_used_ticket_stays_used_across_a_router_restart(tmp_path, redis_url):
    router = Router(tmp_path, TIDINGS_REDIS_URL=redis_url).start()
    try:
        once = ticket("7")
        conn = WampConnection(router.ws_url, REALM, Credentials(None, "ticket", once)).start()
        conn.wait_joined(10)
        conn.close()
        router.restart()
        error = refusal(router.ws_url, Credentials(None, "ticket", once))
        assert error.split(":")[0] == "tidings.error.ticket_used", error
        # A second router sharing the store refuses it too.
        other = Router(tmp_path / "other", TIDINGS_REDIS_URL=redis_url).start()
        try:
            error = refusal(other.ws_url, Credentials(None, "ticket", once))
            assert error.split(":")[0] == "tidings.error.ticket_used", error
        finally:
            other.stop()
    finally:
        router.stop()
