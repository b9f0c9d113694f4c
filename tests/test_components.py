"""The router-side components against a Redis that is slow, down, or comes late."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import redis

from cli import status
from harness.clients import Subscriber, attempt
from harness.ports import free_port
from harness.processes import TEST_BACKEND_SECRET, Router, project_router_config
from harness.raw_wamp import RawWamp
from harness.redis_server import RedisServer, redis_server
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tests.support.proxy import Proxy
from tidings.names import BACKEND_AUTHID, REALM
from tidings.settings import Settings


def backend(router: Router) -> WampConnection:
    credentials = Credentials(BACKEND_AUTHID, "wampcra", TEST_BACKEND_SECRET)
    connection = WampConnection(router.rs_url, REALM, credentials, name="test-backend").start()
    connection.wait_joined(10)
    return connection


def test_a_slow_redis_does_not_slow_anyone_else(tmp_path: Path):
    # Before: the one-time-ticket check ran in the router's event loop; with
    # Redis answering after 1 s, a bystander's call took 3.8 s while 5 signed in.
    with redis_server() as server:
        slow = Proxy(server.port, answer_delay=0.5).start()
        router = Router(
            tmp_path,
            TIDINGS_REDIS_URL=f"redis://127.0.0.1:{slow.port}/0",
            TIDINGS_HELLO_TIMEOUT="30",  # each round trip to this Redis takes half a second
        ).start()
        try:
            bystander = Subscriber(router.ws_url, "99", []).start(timeout=30)
            slowest = 0.0
            joined: list[int] = []
            signing_in = [
                threading.Thread(
                    target=lambda n=n: joined.append(RawWamp(router.ws_url).open().join(f"u{n}"))
                )
                for n in range(5)
            ]
            for thread in signing_in:
                thread.start()
            while any(thread.is_alive() for thread in signing_in):
                began = time.monotonic()
                call = lambda s: s.call("tidings.maintenance.status")  # noqa: E731
                assert attempt(bystander.connection, call) is None
                slowest = max(slowest, time.monotonic() - began)
                time.sleep(0.05)
            assert len(joined) == 5
            assert slowest < 0.5, f"a bystander's call took {slowest:.2f} s"
            bystander.close()
        finally:
            router.stop()
            slow.close()


def test_maintenance_answers_unavailable_until_its_store_comes(tmp_path: Path):
    # Before: a Redis down at start killed the component quietly; its procedure
    # was missing (wamp.error.no_such_procedure) and the saved state never came back.
    port = free_port()
    router = Router(tmp_path, TIDINGS_REDIS_URL=f"redis://127.0.0.1:{port}/0").start()
    server = RedisServer(port)
    connection = backend(router)
    try:
        call = lambda s: s.call("tidings.maintenance.status")  # noqa: E731
        assert attempt(connection, call) == "tidings.error.unavailable"
        server.start()
        saved = '{"enabled": true, "message": "Back at 14:00", "by": "1", "at": null}'
        redis.Redis(port=port).set("tidings:maintenance", saved)
        state: Any = None
        deadline = time.monotonic() + 30
        while state is None:
            assert time.monotonic() < deadline, "the component never loaded the state"
            try:
                state = connection.submit(_call(connection, "tidings.maintenance.status")).result(5)
            except Exception:
                time.sleep(0.2)
        assert state["enabled"] is True and state["message"] == "Back at 14:00"
        # And it was published again, retained, for the browsers that come now.
        late = Subscriber(router.ws_url, "1", []).start()
        try:
            retained = late.connection.submit(_retained(late, "tidings.maintenance")).result(10)
            assert retained["message"] == "Back at 14:00"
        finally:
            late.close()
    finally:
        connection.close()
        router.stop()
        server.stop()


def test_status_names_a_component_that_is_missing(tmp_path: Path):
    config = project_router_config()
    worker = config["workers"][0]
    worker["components"] = [
        c for c in worker["components"] if not c["classname"].endswith("Presence")
    ]
    router = Router(tmp_path, config=config).start()
    try:
        settings = Settings(router_url=router.rs_url, backend_secret=TEST_BACKEND_SECRET)
        health = status.check(settings, timeout=5)
        assert health.missing == ["tidings.entity.editors", "tidings.presence.here"]
        assert "router component (tidings.entity.editors not registered)" in health.down
    finally:
        router.stop()


async def _call(connection: WampConnection, procedure: str) -> Any:
    session = await connection.session()
    return await session.call(procedure)


async def _retained(user: Subscriber, topic: str) -> Any:
    import asyncio

    from autobahn.wamp.types import SubscribeOptions

    session = await user.connection.session()
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await session.subscribe(
        lambda event: got.done() or got.set_result(event),
        topic,
        options=SubscribeOptions(get_retained=True),
    )
    return await asyncio.wait_for(got, 10)


def test_sigterm_stops_the_router_with_its_components_and_status_0(tmp_path: Path):
    router = Router(tmp_path).start()
    assert router.proc is not None
    os.kill(router.pid, signal.SIGTERM)  # the node controller only, as a service manager does
    assert router.proc.wait(30) == 0
    assert router.log is not None
    log = "\n".join(router.log.lines)
    for component in ("Authorizer", "History", "Presence", "Maintenance", "Chat"):
        assert f"stopped component: router.{component.lower()}.{component}" in log, component
    router.proc = None
