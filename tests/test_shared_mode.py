"""Shared mode: history and presence in Redis, one realm over two router nodes.

Real parts on loopback: a throw-away Redis, RabbitMQ in this run's vhost,
two Crossbar routers (nodes a and b) with a worker each, real WAMP clients.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import rabbit
from harness.clients import Subscriber, attempt, refusal, ticket
from harness.nodes import Node
from harness.processes import Router, Worker
from harness.producers import EventSource, Stream
from harness.recovering import Recovering
from harness.redis_server import RedisServer, redis_server
from harness.vhost import isolated_vhost
from publisher.credentials import Credentials

TOPIC = "tidings.entity.order.77"
ORDER_VIEW = ["entity:order:view"]


@pytest.fixture
def shared(broker_url: str, tmp_path: Path) -> Iterator[tuple[str, RedisServer]]:
    """A vhost and a Redis of this test's own."""
    with isolated_vhost(broker_url, prefix="tidings-shared") as vhost, redis_server() as redis:
        yield vhost, redis


def since(user: Subscriber, topic: str, after: str | None) -> Any:
    result: list[Any] = []
    error = attempt(
        user.connection,
        lambda s: _call_into(s, result, "tidings.history.since", topic, after),
    )
    return error or result[0]


async def _call_into(session: Any, into: list[Any], procedure: str, *args: Any) -> None:
    into.append(await session.call(procedure, *args))


def test_events_carry_their_position_and_the_history_answers_from_redis(shared, tmp_path):
    vhost, redis = shared
    node = Node("a", tmp_path, vhost, redis.url).start()
    user = Subscriber(node.router.ws_url, "1", [TOPIC], ORDER_VIEW).start()
    source = EventSource(vhost, TOPIC)
    try:
        ids = [source.raw(n) for n in range(3)] + [source.task(3)]
        events = user.wait_count(4, timeout=30)
        assert {e["event_id"] for e in events} == set(ids)
        positions = [e["position"] for e in events]
        assert len({p.split(":")[0] for p in positions}) == 1  # one epoch
        assert sorted(int(p.split(":")[1]) for p in positions) == [1, 2, 3, 4]
        first = sorted(events, key=lambda e: int(e["position"].split(":")[1]))[0]
        missed = since(user, TOPIC, first["event_id"])
        assert [e["event_id"] for e in missed] == [
            e["event_id"] for e in sorted(events, key=lambda e: e["position"])[1:]
        ]
    finally:
        source.close()
        user.close()
        node.stop()


@pytest.mark.parametrize("mode", ["shared", "memory"])
def test_a_router_restart_costs_no_one_a_reload(mode, shared, tmp_path):
    vhost, redis = shared
    # The history must hold what comes during an outage: 100/s for a few seconds.
    env = {"TIDINGS_HISTORY_SIZE": "2000"}
    if mode == "shared":
        env["TIDINGS_REDIS_URL"] = redis.url
    router = Router(tmp_path / "router", **env).start()
    worker = Worker(router, vhost, tmp_path, **env).start()
    user = Recovering([router.ws_url], "1", [TOPIC], ORDER_VIEW).start()
    source = EventSource(vhost, TOPIC, confirm=True)
    stream = Stream(source, count=500, rate=100, task_every=5).start()
    try:
        stream.wait_progress(150, 30)
        router.restart(downtime=1.0)  # events keep coming meanwhile
        stream.join(60)
        if mode == "shared":
            # Before, during and after the restart: everything, and no reload.
            user.wait_all(source.sent, 60)
            assert user.gaps == [] and user.joins >= 2
            assert user.recovered > 0
        else:
            # Memory mode keeps history in the router: after a restart it is gone.
            deadline = time.monotonic() + 30
            while not user.gaps:
                assert time.monotonic() < deadline, "memory mode did not report the gap"
                time.sleep(0.1)
            assert user.gaps == [TOPIC]
    finally:
        source.close()
        user.close()
        worker.stop()
        router.stop()


def editors(user: Subscriber | Recovering, entity: str, record: str) -> set[str]:
    result: list[Any] = []
    call = lambda s: _call_into(s, result, "tidings.entity.editors", entity, record)  # noqa: E731
    error = attempt(user.connection, call)
    assert error is None, error
    return set(result[0])


def wait_until(condition: Any, timeout: float, what: str) -> float:
    """Seconds it took for `condition()` to hold."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.1)
    return time.monotonic() - began


def test_two_nodes_serve_one_realm_and_a_dead_node_s_users_move_over(shared, tmp_path):
    vhost, redis = shared
    # What comes during a failover (200/s for a few seconds) must stay held.
    a = Node("a", tmp_path, vhost, redis.url, TIDINGS_HISTORY_SIZE="2000").start()
    b = Node("b", tmp_path, vhost, redis.url, TIDINGS_HISTORY_SIZE="2000").start()
    # Alice's page is on node a and knows node b; Bob is on node b.
    alice = Recovering([a.router.ws_url, b.router.ws_url], "1", [TOPIC], ORDER_VIEW).start()
    bob = Recovering([b.router.ws_url], "2", [TOPIC], ORDER_VIEW).start()
    watcher = Subscriber(b.router.ws_url, "3", ["tidings.presence.order.77"], ORDER_VIEW).start()
    editor = Subscriber(a.router.ws_url, "5", [TOPIC], ORDER_VIEW).start()  # on node a only
    source = EventSource(vhost, TOPIC, confirm=True)
    try:
        # An editor on node a is an editor on node b.
        wait_until(lambda: {"1", "2", "5"} <= editors(bob, "order", "77"), 10, "editors on b")
        stream = Stream(source, count=1200, rate=200, task_every=5).start()
        stream.wait_progress(300, 30)
        a.kill()  # SIGKILL, no goodbye
        left = wait_until(lambda: "5" not in editors(bob, "order", "77"), 20, "a's editor leaves")
        assert left < 15, f"a dead node's user left after {left:.1f} s"
        # The announcement follows the record in Redis (pub/sub, then a publish on b).
        heard = lambda: {"user": "5", "state": "left"} in watcher.payloads()  # noqa: E731
        wait_until(heard, 5, "the watcher on b hears that a's editor left")
        stream.join(60)
        # Every event reaches the subscribers of every node; Alice moved to b without a gap.
        bob.wait_all(source.sent, 60)
        alice.wait_all(source.sent, 60)
        assert alice.on == 1 and alice.gaps == [] and bob.gaps == []
        # Maintenance: visible on b, and on a once it is back.
        source.send_task("tidings.maintenance", [True, "back soon"])
        on = lambda user: _status(user)["enabled"] is True  # noqa: E731
        wait_until(lambda: on(bob), 10, "maintenance on node b")
        a.start()
        late = Subscriber(a.router.ws_url, "4", []).start()
        wait_until(lambda: on(late), 20, "maintenance on the restarted node a")
        late.close()
    finally:
        source.close()
        for client in (alice, bob, watcher, editor):
            client.close()
        a.stop()
        b.stop()


def _status(user: Subscriber | Recovering) -> dict[str, Any]:
    result: list[Any] = []
    error = attempt(user.connection, lambda s: _call_into(s, result, "tidings.maintenance.status"))
    return {"enabled": None} if error else result[0]


def test_redis_down_holds_events_unacked_and_they_go_on_when_it_is_back(shared, tmp_path):
    vhost, redis = shared
    node = Node("a", tmp_path, vhost, redis.url).start()
    user = Recovering([node.router.ws_url], "1", [TOPIC], ORDER_VIEW).start()
    source = EventSource(vhost, TOPIC, confirm=True)
    try:
        redis.stop()
        ids = [source.raw(n) if n % 5 else source.task(n) for n in range(50)]
        # Held by the worker, unacked: nothing lost, nothing delivered yet.
        held = lambda: sum(unacked for _, unacked in rabbit.queue_depths(vhost).values())  # noqa: E731
        wait_until(lambda: held() == 50, 20, "the worker holding the 50 events")
        assert not any(i in user.events for i in ids)
        # What browsers ask meanwhile gets a clear answer, never an internal URI.
        for call in (
            lambda s: s.call("tidings.history.since", TOPIC, None),
            lambda s: s.call("tidings.entity.editors", "order", "77"),
        ):
            assert attempt(user.connection, call) == "tidings.error.unavailable"
        # A new browser cannot sign in (its ticket cannot be marked used), and is told so.
        error = refusal(node.router.ws_url, Credentials(None, "ticket", ticket("2", ORDER_VIEW)))
        assert error.split(":")[0] == "tidings.error.unavailable", error
        redis.start()
        user.wait_all(ids, 60)
        wait_until(lambda: held() == 0, 20, "every message acked")
    finally:
        source.close()
        user.close()
        node.stop()
