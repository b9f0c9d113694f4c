"""The connection indicator, and events missed while disconnected coming back."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import replace

from playwright.sync_api import WebSocketRoute, expect

from harness.clients import Subscriber
from publisher import Publisher
from tests.browser.conftest import ROUTER_DOWN, Browsers
from tidings.settings import Settings

WS = re.compile(r".*/ws$")
# A send the page makes while the cut is closing its socket (autobahn does not check the
# socket's state before sending) is logged by the browser as below; it is lost with the
# link, and recovery is what this test checks. Seen once in about a hundred runs.
LINK_DOWN = re.compile(r"WebSocket is already in CLOSING or CLOSED state")


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
    browsers.expected_errors = LINK_DOWN
    link = Link()
    browsers.context("user-4").route_web_socket(WS, link.route)
    # Caught up first: what the router held before is the page's start, not "missed".
    dave = browsers.user("4", order="4501").synced()
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


def test_a_change_made_while_the_link_was_down_is_told_on_a_quiet_record(
    browsers: Browsers, send_task
):
    # Before: with no event seen on the record yet, the page had nothing to resume
    # from and asked for nothing after the reconnect; the change went untold.
    browsers.expected_errors = LINK_DOWN
    link = Link()
    browsers.context("user-1").route_web_socket(WS, link.route)
    alice = browsers.user("1", order="4502").synced()
    expect(alice.get("outdated-notice")).to_be_hidden()
    link.cut()
    expect(alice.get("connection")).to_have_attribute("data-state", "reconnecting")
    send_task("tidings.entity_changed", "order", 4502, changed_by=2, fields=["status"])
    link.up = True
    alice.connected()
    expect(alice.get("outdated-text")).to_have_text(
        "This record was changed by Bob (status) — reload"
    )


def test_the_page_rides_out_a_router_restart(browsers: Browsers, own_router):
    browsers.expected_errors = ROUTER_DOWN
    # A backend session publishes straight to this router (the pipeline's own outage
    # handling is tested in tests/test_router_restart.py); a publish waits for the router.
    config = Settings.from_environ(os.environ)
    publisher = Publisher(replace(config, router_url=own_router.rs_url)).start()
    pending: list[threading.Thread] = []

    def notify(text: str, wait: bool = True) -> None:
        def send() -> None:
            publisher.publish("tidings.user.1", {"text": text, "event_id": text}, timeout=60)

        if wait:
            send()
        else:
            pending.append(threading.Thread(target=send, daemon=True))
            pending[-1].start()

    try:
        alice = browsers.user("1", order="4502", base_url=own_router.http_url)
        notify("before the restart")
        expect(alice.get("notification").filter(has_text="before the restart")).to_have_count(1)

        own_router.stop()
        expect(alice.get("connection")).to_have_attribute("data-state", "reconnecting")
        notify("during 1", wait=False)  # published once the router is back
        notify("during 2", wait=False)
        own_router.start()
        alice.connected()
        for thread in pending:
            thread.join(60)

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
        publisher.close()
