"""One-time tickets across router restarts and several routers, with the Redis store."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from harness.clients import refusal, ticket
from harness.processes import Router
from harness.raw_wamp import ABORT, AUTHENTICATE, CHALLENGE, HELLO, WELCOME, RawWamp
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


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_claims_racing_for_one_ticket_win_once(kind, redis_url):
    stores = (
        [MemoryJtiStore()] * 16
        if kind == "memory"
        else [RedisJtiStore(redis_url) for _ in range(16)]  # one client each, as routers
    )
    for _ in range(20):
        jti = str(uuid.uuid4())
        start = threading.Barrier(len(stores))
        won: list[bool] = []

        def claim(store, jti=jti, start=start, won=won) -> None:
            start.wait()
            won.append(store.claim(jti, ttl=60))

        threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(won) == [False] * (len(stores) - 1) + [True]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_connections_racing_with_one_ticket_join_once(kind, tmp_path, redis_url):
    env = {"TIDINGS_REDIS_URL": redis_url} if kind == "redis" else {}
    routers = [Router(tmp_path / "a", **env).start()]
    if kind == "redis":  # two routers sharing the store, the race split between them
        routers.append(Router(tmp_path / "b", **env).start())
    clients = []
    try:
        clients = [RawWamp(routers[n % len(routers)].ws_url).open() for n in range(10)]
        once = ticket("7")
        for client in clients:
            client.send([HELLO, REALM, {"roles": {"subscriber": {}}, "authmethods": ["ticket"]}])
        for client in clients:
            assert client.read()[0] == CHALLENGE
        for client in clients:  # all AUTHENTICATEs in flight before any answer is read
            client.send([AUTHENTICATE, once, {}])
        answers = [client.read() for client in clients]
        assert sum(1 for a in answers if a[0] == WELCOME) == 1, answers
        refused = [a for a in answers if a[0] != WELCOME]
        assert {(a[0], a[2]) for a in refused} == {(ABORT, "tidings.error.ticket_used")}, refused
    finally:
        for client in clients:
            client.close()
        for router in routers:
            router.stop()
