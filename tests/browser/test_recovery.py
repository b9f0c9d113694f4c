"""The connection indicator, and events missed while disconnected coming back."""

from __future__ import annotations

import re
from pathlib import Path

from celery import Celery
from playwright.sync_api import WebSocketRoute, expect

from tests.browser.conftest import ROUTER_DOWN, Browsers
from tests.support.broker import isolated_vhost
from tests.support.clients import Subscriber
from tests.support.processes import Worker

WS = re.compile(r".*/ws$")


class Link:
    """The WebSocket between the page and the router, which the test can cut and restore."""

    def __init__(self) -> None:
        self.up = True
        self.open: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    def route(self, page_side: WebSocketRoute) -> None:
        if not self.up:
            page_side.close(code=1001, reason="link cut by the test")
            return
        self.open.append((page_side, page_side.connect_to_server()))

    def cut(self) -> None:
        self.up = False
        for page_side, server_side in self.open:
            server_side.close()
            page_side.close(code=1001, reason="link cut by the test")
        self.open.clear()


def test_events_missed_while_the_link_is_down_are_recovered(browsers: Browsers, router, send_task):
    link = Link()
    browsers.context("user-4").route_web_socket(WS, link.route)
    dave = browsers.user("4", order="4501")
    send_task("tidings.publish", "tidings.user.4", {"title": "Before", "text": "before the cut"})
    expect(dave.get("notification").filter(has_text="before the cut")).to_have_count(1)

    link.cut()
    expect(dave.get("connection")).to_have_attribute("data-state", "reconnecting")
    expect(dave.get("connection")).to_have_text("Reconnecting…")
    dave.screenshot("reconnecting")

    # Another session of Dave's sees the three events: the router has them (and its history).
    witness = Subscriber(router.ws_url, "4", ["tidings.user.4"]).start()
    try:
        for n in (1, 2, 3):
            send_task(
                "tidings.publish", "tidings.user.4", {"title": "Missed", "text": f"missed {n}"}
            )
        witness.wait_count(3, timeout=30)
    finally:
        witness.close()
    expect(dave.get("notification").filter(has_text="missed")).to_have_count(0)

    link.up = True
    dave.connected()
    for n in (1, 2, 3):
        expect(dave.get("notification").filter(has_text=f"missed {n}")).to_have_count(1)
    expect(dave.get("toast").filter(has_text="3 missed events recovered")).to_be_visible()
    expect(dave.get("reload-needed")).to_be_hidden()
    dave.screenshot("recovered")


def test_the_page_rides_out_a_router_restart(
    browsers: Browsers, own_router, broker_url, tmp_path: Path
):
    browsers.expected_errors = ROUTER_DOWN
    # Its own vhost and worker: the session's worker must not take these tasks.
    with isolated_vhost(broker_url) as own_broker:
        worker = Worker(own_router, own_broker, tmp_path, "--concurrency", "2").start()
        app = Celery("someapp", broker=own_broker, set_as_current=False)

        def notify(text: str) -> None:
            app.send_task("tidings.publish", ["tidings.user.1", {"text": text}], queue="tidings")

        try:
            alice = browsers.user("1", order="4502", base_url=own_router.http_url)
            notify("before the restart")
            expect(alice.get("notification").filter(has_text="before the restart")).to_have_count(1)

            own_router.stop()
            expect(alice.get("connection")).to_have_attribute("data-state", "reconnecting")
            notify("during 1")  # sent while the router is down: they wait in RabbitMQ
            notify("during 2")
            own_router.start()
            alice.connected()

            # The new router does not hold the last event the page saw: it says so.
            expect(alice.get("reload-needed")).to_be_visible()
            alice.screenshot("router-restart-reload-needed")
            alice.get("reload-page").click()
            alice.connected()
            for n in (1, 2):
                expect(alice.get("notification").filter(has_text=f"during {n}")).to_have_count(1)
            expect(alice.get("reload-needed")).to_be_hidden()
            alice.screenshot("router-restart-after-reload")
        finally:
            app.close()
            worker.stop()
