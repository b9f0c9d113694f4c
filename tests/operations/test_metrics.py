"""The worker's and the router's Prometheus endpoints count exactly what happened, and the
health endpoints say when a part is missing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from harness.clients import Subscriber, ticket
from harness.processes import Router
from harness.producers import EventSource
from harness.raw_wamp import RawWamp
from harness.redis_server import RedisServer
from harness.scrape import scrape, status

TOPIC = "tidings.user.ops-metrics"
pytestmark = pytest.mark.timeout(120)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def test_the_worker_counts_exactly_the_workload(router, vhost, start_worker, subscribe):
    worker = start_worker(router, vhost)
    counter = subscribe(router.ws_url, "ops-metrics", [TOPIC])
    source = EventSource(vhost, TOPIC)
    tasks, raws, bad_raws, bad_tasks = 20, 30, 3, 2
    try:
        wait_until(lambda: status(worker.metrics_url.replace("/metrics", "/readyz"))[0] == 200,
                   30, "the worker ready")  # fmt: skip
        before = scrape(worker.metrics_url)
        good = [source.task(n) for n in range(tasks)] + [source.raw(n) for n in range(raws)]
        for n in range(bad_raws):
            source.raw_body(f"{{not json {n}", "publish")
        for n in range(bad_tasks):  # retain cannot go with a list of users
            source.send_task("tidings.publish", [TOPIC, {"n": n}, None, ["1"], True])
        counter.wait_all(set(good), 30)
        dead = 'tidings_events_dead_lettered_total{reason="invalid"}'
        wait_until(
            lambda: delta(scrape(worker.metrics_url), before, dead) == bad_raws + bad_tasks,
            20,
            "every bad message dead-lettered",
        )
        after = scrape(worker.metrics_url)
    finally:
        source.close()
    assert delta(after, before, 'tidings_events_consumed_total{source="task"}') == tasks + bad_tasks
    assert delta(after, before, 'tidings_events_consumed_total{source="raw"}') == raws + bad_raws
    assert delta(after, before, "tidings_events_published_total") == tasks + raws
    assert delta(after, before, "tidings_publish_ack_seconds_count") == tasks + raws
    assert delta(after, before, 'tidings_publish_ack_seconds_bucket{le="+Inf"}') == tasks + raws
    assert delta(after, before, 'tidings_events_dead_lettered_total{reason="refused"}') == 0
    assert delta(after, before, "tidings_events_redelivered_total") == 0
    assert delta(after, before, "tidings_publish_ack_seconds_sum") > 0
    assert after["tidings_publishes_in_flight"] == 0
    assert after["tidings_publisher_connected"] == 1
    assert after["tidings_worker_ready"] == 1


def test_the_router_counts_sign_ins_history_calls_and_sessions(own_router: Router):
    before = scrape(own_router.metrics_url)
    user = Subscriber(own_router.ws_url, "7", ["tidings.user.7"]).start()
    spent = ticket("7")
    clients = []
    try:
        first = RawWamp(own_router.ws_url).open()
        clients.append(first)
        first.send([1, "tidings", {"roles": {"caller": {}}, "authmethods": ["ticket"]}])
        first.read()
        first.send([5, spent, {}])
        assert first.read()[0] == 2
        again = RawWamp(own_router.ws_url).open()
        clients.append(again)
        again.send([1, "tidings", {"roles": {"caller": {}}, "authmethods": ["ticket"]}])
        again.read()
        again.send([5, spent, {}])
        assert again.read()[0] == 3  # ABORT: used
        first.send([48, 1, {}, "tidings.history.since", ["tidings.user.7"]])
        first.send([48, 2, {}, "tidings.history.since", ["tidings.user.8"]])  # not hers
        first.send([48, 3, {}, "tidings.history.since", ["tidings.user.7", "gone"]])
        replies = [first.read() for _ in range(3)]
        assert [r[0] for r in replies] == [50, 8, 8]
        after = scrape(own_router.metrics_url)
        sessions = after['tidings_router_sessions{role="frontend"}']
    finally:
        for client in clients:
            client.close()
        user.close()
    assert delta(after, before, 'tidings_auth_total{result="ok"}') == 2  # the Subscriber too
    assert delta(after, before, 'tidings_auth_total{result="used"}') == 1
    for result, n in (("ok", 1), ("denied", 1), ("gap", 1)):
        assert delta(after, before, f'tidings_history_requests_total{{result="{result}"}}') == n
    assert sessions == 2
    assert after["tidings_router_subscriptions"] >= before["tidings_router_subscriptions"] + 1
    assert after["tidings_router_ready"] == 1
    assert after["tidings_presence_users"] == 0 and "tidings_history_events" in after


def test_readyz_follows_the_router_and_livez_the_worker_itself(own_router, vhost, start_worker):
    worker = start_worker(own_router, vhost, TIDINGS_PUBLISH_TIMEOUT="3")
    readyz = worker.metrics_url.replace("/metrics", "/readyz")
    livez = worker.metrics_url.replace("/metrics", "/livez")
    wait_until(lambda: status(readyz)[0] == 200, 30, "ready with the router up")
    own_router.stop()
    stopped = time.monotonic()
    wait_until(lambda: status(readyz)[0] == 503, 3 + 5, "not ready without the router")
    code, body = status(readyz)
    assert code == 503 and any("router" in why for why in body["why"]), body
    assert status(livez)[0] == 200, "the worker itself is alive"
    assert time.monotonic() - stopped < 3 + 5
    own_router.start()
    wait_until(lambda: status(readyz)[0] == 200, 30, "ready again once the router is back")


def test_health_is_503_while_a_component_cannot_serve(tmp_path):
    redis = RedisServer()  # the shared store, down at first
    router = Router(tmp_path, TIDINGS_REDIS_URL=redis.url).start()
    try:
        health = router.http_url + "health"
        code, body = status(health)
        assert code == 503, body
        assert "redis: unreachable" in body["why"], body
        assert all(len(why) < 80 and "Traceback" not in why for why in body["why"])
        redis.start()
        wait_until(lambda: status(health)[0] == 200, 30, "healthy once Redis answers")
        assert status(health)[1] == {"ok": True}
    finally:
        router.stop()
        redis.stop()


def test_json_logs_carry_the_fields_a_reader_filters_on(tmp_path, vhost, start_worker):
    router = Router(tmp_path, TIDINGS_LOG_FORMAT="json", TIDINGS_NODE="ops").start()
    worker = start_worker(router, vhost, TIDINGS_LOG_FORMAT="json", TIDINGS_NODE="ops")
    source = EventSource(vhost, TOPIC)
    try:
        source.send_task("tidings.publish", [TOPIC, {"m": 1}, None, ["1"], True])
        wait_until(lambda: any("dead-lettering" in line for line in worker.log.lines), 20,
                   "the bad task dead-lettered")  # fmt: skip
        spent = ticket("7")
        for _ in range(2):  # the second time: refused, as used
            client = RawWamp(router.ws_url).open()
            client.send([1, "tidings", {"roles": {"caller": {}}, "authmethods": ["ticket"]}])
            client.read()
            client.send([5, spent, {}])
            client.read()
            client.close()
        wait_until(lambda: any("ticket refused" in line for line in router.log.lines), 10,
                   "the refusal logged")  # fmt: skip
    finally:
        source.close()
        worker.stop()
        router.stop()
    for name, log in (("worker", worker.log), ("router", router.log)):
        records = [json.loads(line) for line in log.lines if line.strip()]
        assert len(records) >= 5, f"the {name} wrote {len(records)} lines"
        assert all(r["node"] == "ops" and r["level"] and r["message"] for r in records), name
    worker_records = [json.loads(line) for line in worker.log.lines if line.strip()]
    assert any(r["logger"].startswith("celery") for r in worker_records)
    (dead,) = [r for r in worker_records if "dead-lettering" in r["message"]]
    assert dead["task_id"] and dead["reason"] == "invalid" and dead["level"] == "warning"
    router_records = [json.loads(line) for line in router.log.lines if line.strip()]
    assert {r["process"] for r in router_records} >= {"controller", "router"}
    (refused,) = [r for r in router_records if "ticket refused" in r["message"]]
    assert refused["reason"] == "used"
