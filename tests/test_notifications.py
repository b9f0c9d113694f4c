"""The built-in notifications end to end: content outdating, presence, maintenance, recovery.

Real router (with its presence, history and maintenance components), real
Celery worker, real WAMP clients that sign in with tickets like browsers do.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid

import pytest
from autobahn.wamp.exception import ApplicationError
from celery import Celery

from harness.processes import BIN, ROOT, base_env
from harness.producers import app_client, post_raw
from publisher import Publisher
from tests.support.browser import Browser
from tests.support.measurements import record, summary_ms
from tidings import events, maintenance_state
from tidings.settings import Settings

VIEW = ["entity:order:view"]


def new_record() -> str:
    """A record id of its own per test: tests share one router."""
    return uuid.uuid4().hex[:12]


def error_of(call) -> str:
    with pytest.raises(ApplicationError) as caught:
        call()
    return caught.value.error


# -- content outdating ------------------------------------------------------------------
def test_a_change_reaches_the_other_editors_but_not_the_tab_that_saved(router, worker, broker_url):
    rid = new_record()
    topic = f"tidings.entity.order.{rid}"
    saving_tab = Browser(router.ws_url, "7", [topic], VIEW).start()
    other_tab = Browser(router.ws_url, "7", [topic], VIEW).start()
    editor = Browser(router.ws_url, "8", [topic], VIEW).start()
    try:
        app = app_client(broker_url)
        app.send_task(
            "tidings.entity_changed",
            ["order", rid],
            {
                "changed_by": 7,
                "fields": ["status", "total"],
                "origin_session": saving_tab.session_id,
            },
            queue="tidings",
        )
        (seen,) = editor.wait_on(topic, 1)
        assert {k: v for k, v in seen.items() if k not in ("event_id", "at")} == {
            "action": "updated",
            "entity": "order",
            "id": rid,
            "changed_by": 7,
            "fields": ["status", "total"],
        }
        assert other_tab.wait_on(topic, 1) == [seen]  # same user, another tab: told
        # A change by someone else reaches the saving tab: so it is subscribed,
        # and never got the first one.
        app.send_task(
            "tidings.entity_changed",
            ["order", rid],
            {"changed_by": 8, "fields": ["note"]},
            queue="tidings",
        )
        (second,) = saving_tab.wait_on(topic, 1)
        assert second["changed_by"] == 8 and second["fields"] == ["note"]
        assert [e["event_id"] for e in editor.wait_on(topic, 2)] == [
            seen["event_id"],
            second["event_id"],
        ]
    finally:
        for browser in (saving_tab, other_tab, editor):
            browser.close()


def test_raw_created_and_deleted_reach_the_collection_and_spare_the_origin(
    router, worker, broker_url
):

    rid = new_record()
    topic = f"tidings.entity.order.{rid}"
    grid = Browser(router.ws_url, "8", ["tidings.entity.order"], VIEW).start()
    saving_tab = Browser(router.ws_url, "7", [topic], VIEW).start()
    try:
        created, deleted = str(uuid.uuid4()), str(uuid.uuid4())
        post_raw(
            broker_url,
            {"event_id": created, "type": "entity.created", "entity": "order", "id": rid,
             "changed_by": 7, "origin_session": saving_tab.session_id},
            routing_key="entity.created",
        )  # fmt: skip
        post_raw(
            broker_url,
            {"event_id": deleted, "type": "entity.deleted", "entity": "order", "id": rid,
             "changed_by": 8},
            routing_key="entity.deleted",
        )  # fmt: skip
        on_grid = grid.wait_for(lambda evs: {created, deleted} <= set(ids(evs)))
        mine = [e for e in on_grid if e["id"] == rid]
        assert [(e["event_id"], e["action"]) for e in mine] == [
            (created, "created"),
            (deleted, "deleted"),
        ]
        # The tab that created it is not told; it hears the deletion by someone else.
        assert ids(saving_tab.wait_on(topic, 1)) == [deleted]
    finally:
        grid.close()
        saving_tab.close()


# -- presence -----------------------------------------------------------------------------
def test_presence_joined_and_left_once_per_user_however_many_tabs(router):
    rid = new_record()
    record_topic = f"tidings.entity.order.{rid}"
    presence = f"tidings.presence.order.{rid}"
    watcher = Browser(router.ws_url, "9", [presence], VIEW).start()
    tab1 = Browser(router.ws_url, "7", [], VIEW).start()
    tab2 = Browser(router.ws_url, "7", [], VIEW).start()
    other = Browser(router.ws_url, "8", [presence], VIEW).start()
    stranger = Browser(router.ws_url, "66", []).start()  # may not view orders
    try:
        editors = lambda: watcher.call("tidings.entity.editors", "order", rid)  # noqa: E731
        assert editors() == []

        started = time.perf_counter()
        tab1.subscribe(record_topic)
        assert watcher.wait_on(presence, 1) == [{"user": "7", "state": "joined"}]
        latency = [time.perf_counter() - started]
        tab2.subscribe(record_topic)  # the same user again: nobody is told
        other.subscribe(record_topic)
        assert watcher.wait_on(presence, 2)[1] == {"user": "8", "state": "joined"}
        assert editors() == ["7", "8"]

        tab1.unsubscribe(record_topic)  # tab2 is still on the record
        tab2.close()  # a disconnect counts as leaving
        assert watcher.wait_on(presence, 3)[2] == {"user": "7", "state": "left"}
        assert editors() == ["8"]
        other.unsubscribe(record_topic)
        assert watcher.wait_on(presence, 4) == [
            {"user": "7", "state": "joined"},
            {"user": "8", "state": "joined"},
            {"user": "7", "state": "left"},
            {"user": "8", "state": "left"},
        ]
        # "The others": user 8 heard about 7, never about itself.
        assert other.wait_on(presence, 2) == [
            {"user": "7", "state": "joined"},
            {"user": "7", "state": "left"},
        ]
        assert (
            error_of(lambda: stranger.call("tidings.entity.editors", "order", rid))
            == "tidings.error.not_authorized"
        )

        for _ in range(20):
            count = len(watcher.on(presence)) + 1
            started = time.perf_counter()
            tab1.subscribe(record_topic)
            watcher.wait_on(presence, count)
            latency.append(time.perf_counter() - started)
            tab1.unsubscribe(record_topic)
            watcher.wait_on(presence, count + 1)
        record("presence_latency", summary_ms(latency), note="subscribe call → other user has it")
    finally:
        for browser in (watcher, tab1, tab2, other, stranger):
            browser.close()


# -- maintenance ------------------------------------------------------------------------
def cli(router, broker_url: str, *args: str) -> str:
    env = base_env(TIDINGS_BROKER_URL=broker_url, TIDINGS_ROUTER_URL=router.rs_url)
    done = subprocess.run(
        [str(BIN / "tidings"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_maintenance_from_the_cli_reaches_everyone_and_late_joiners(router, worker, broker_url):
    connected = Browser(router.ws_url, "7", ["tidings.maintenance"]).start()
    late = None
    try:
        cli(router, broker_url, "maintenance", "on", "--message", "back at 14:00", "--by", "1")
        (notice,) = connected.wait_on("tidings.maintenance", 1)
        assert notice["enabled"] is True and notice["message"] == "back at 14:00"
        assert notice["by"] == "1" and notice["at"]

        late = Browser(router.ws_url, "8", ["tidings.maintenance"], get_retained=True).start()
        assert late.wait_on("tidings.maintenance", 1) == [notice]
        assert late.call("tidings.maintenance.status") == notice
        status = json.loads(cli(router, broker_url, "maintenance", "status", "--json"))
        assert status == notice
        assert "maintenance ON" in cli(router, broker_url, "maintenance", "status")
    finally:
        cli(router, broker_url, "maintenance", "off")
        off = connected.wait_on("tidings.maintenance", 2)[-1]
        assert off["enabled"] is False
        connected.close()
        if late is not None:
            late.close()


def test_maintenance_on_and_off_survive_a_router_restart_and_a_corrupt_file_is_off(own_router):
    config = Settings.from_environ(os.environ)
    publisher = Publisher(config.__class__(**{**config.__dict__, "router_url": own_router.rs_url}))
    publisher.start()
    state_file = own_router.cbdir / "maintenance.json"

    def status_after_restart() -> dict:
        own_router.restart()
        late = Browser(own_router.ws_url, "8", ["tidings.maintenance"]).start()
        try:
            return late.call("tidings.maintenance.status")
        finally:
            late.close()

    def switch(enabled: bool) -> dict:
        # What the worker does for `tidings.maintenance(...)`: the same code,
        # in-process, so that no other test's worker takes the task.
        notice = events.maintenance(enabled, message="upgrading" if enabled else None, by=1)
        publisher.publish(notice.topic, notice.payload, **notice.options)
        deadline = time.monotonic() + 5
        while not (state_file.exists() and json.loads(state_file.read_text()) == notice.payload):
            assert time.monotonic() < deadline, "the state was not saved"
            time.sleep(0.05)
        return notice.payload

    try:
        assert status_after_restart() == maintenance_state.OFF  # never switched on
        on = switch(True)
        own_router.restart()
        late = Browser(own_router.ws_url, "8", ["tidings.maintenance"], get_retained=True).start()
        try:
            assert late.wait_on("tidings.maintenance", 1) == [on]
            assert late.call("tidings.maintenance.status") == on
        finally:
            late.close()
        off = switch(False)
        assert status_after_restart() == off
        state_file.write_text('{"enabled": tru')  # a crash of something else, a bad edit
        assert status_after_restart() == maintenance_state.OFF
        state_file.write_text('{"enabled": "yes"}')
        assert status_after_restart() == maintenance_state.OFF
    finally:
        publisher.close()


# -- missed-event recovery ---------------------------------------------------------------
def send_changes(app: Celery, rid: str, count: int, pause: float = 0.0) -> None:
    for n in range(count):
        app.send_task(
            "tidings.entity_changed", ["order", rid], {"changed_by": 1, "fields": [f"f{n}"]},
            queue="tidings",
        )  # fmt: skip
        time.sleep(pause)


def ids(payloads: list[dict]) -> list[str]:
    return [p["event_id"] for p in payloads]


def test_recovery_returns_exactly_the_missed_events(router, worker, broker_url):
    rid = new_record()
    topic = f"tidings.entity.order.{rid}"
    total = 80
    # Connected throughout: the order in which the router delivered the events.
    reference = Browser(router.ws_url, "30", [topic], VIEW).start()
    reader = Browser(router.ws_url, "31", [topic], VIEW).start()
    app = app_client(broker_url)
    producer = threading.Thread(target=send_changes, args=(app, rid, total, 0.015), daemon=True)
    again = None
    try:
        producer.start()
        reader.wait_on(topic, 5)
        reader.close()  # the laptop lid closes while events flow
        last_seen = ids(reader.on(topic))[-1]
        reference.wait_on(topic, len(reader.on(topic)) + 15)

        again = Browser(router.ws_url, "31", [topic], VIEW).start()
        before_resubscribe = ids(reference.on(topic))
        started = time.perf_counter()
        recovered = ids(again.call("tidings.history.since", topic, last_seen))
        latency = [time.perf_counter() - started]

        producer.join(30)
        delivered = ids(reference.wait_on(topic, total, timeout=30))
        missed = delivered[delivered.index(last_seen) + 1 :]
        # Exactly the events after the last one seen, in the router's order...
        assert recovered == missed[: len(recovered)]
        # ...at least all those delivered before the client was back...
        assert set(before_resubscribe[delivered.index(last_seen) + 1 :]) <= set(recovered)
        # ...and with what arrives live after that, nothing is missing.
        live = ids(again.wait_for(lambda evs: len(set(ids(evs)) | set(recovered)) >= len(missed)))
        assert set(recovered) | set(live) == set(missed)

        for _ in range(20):
            started = time.perf_counter()
            again.call("tidings.history.since", topic, last_seen)
            latency.append(time.perf_counter() - started)
        record(
            "recovery_latency",
            summary_ms(latency),
            note=f"history.since round trip, {len(missed)} events in the answer",
        )
    finally:
        producer.join(30)
        reference.close()
        reader.close()
        if again is not None:
            again.close()


def test_recovery_reports_a_gap_once_events_fell_out_of_the_window(router, worker, broker_url):
    rid = new_record()
    topic = f"tidings.entity.order.{rid}"
    size = Settings.from_environ(os.environ).history_size
    reference = Browser(router.ws_url, "32", [topic], VIEW).start()
    stranger = Browser(router.ws_url, "66", []).start()
    try:
        app = app_client(broker_url)
        send_changes(app, rid, size + 5)
        delivered = ids(reference.wait_on(topic, size + 5, timeout=30))

        with pytest.raises(ApplicationError) as gap:
            reference.call("tidings.history.since", topic, delivered[2])
        assert gap.value.error == "tidings.error.history_gap"
        # Still in the window: the rest comes back.
        assert ids(reference.call("tidings.history.since", topic, delivered[10])) == delivered[11:]
        # Same permission as subscribing: no view permission, or another user's topic.
        assert (
            error_of(lambda: stranger.call("tidings.history.since", topic, delivered[-2]))
            == "tidings.error.not_authorized"
        )
        assert (
            error_of(lambda: stranger.call("tidings.history.since", "tidings.user.32", None))
            == "tidings.error.not_authorized"
        )
    finally:
        reference.close()
        stranger.close()
