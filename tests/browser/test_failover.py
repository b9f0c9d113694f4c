"""Shared mode in a real browser: the page's router dies, the page goes on with another node."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

from harness.clients import ticket
from harness.nodes import Node
from harness.redis_server import redis_server
from harness.vhost import isolated_vhost
from tests.browser.conftest import ROUTER_DOWN, Browsers


def test_the_page_moves_to_another_node_and_recovers_without_a_reload(
    browser, broker_url, send_task_to, tmp_path: Path
):
    with isolated_vhost(broker_url, prefix="tidings-failover") as vhost, redis_server() as redis:
        a = Node("a", tmp_path, vhost, redis.url)
        b = Node("b", tmp_path, vhost, redis.url).allow_pages_of(a)
        a.start()
        b.start()
        pages = Browsers(browser, a.router.http_url)
        pages.expected_errors = ROUTER_DOWN
        send = send_task_to(vhost)
        try:
            context = pages.context("alice")
            # The application's ticket hook and the list of router nodes, as an
            # embedding page defines them (README "In the browser").
            context.expose_function("mintTicket", lambda: ticket("1", ["entity:order:view"]))
            context.add_init_script(
                f"window.tidingsUrl = [{a.router.ws_url!r}, {b.router.ws_url!r}];"
                "window.tidingsTicket = () => window.mintTicket();"
            )
            alice = pages.open("", as_="alice").connected()
            send("tidings.publish", "tidings.user.1", {"title": "Before", "text": "before"})
            expect(alice.get("notification").filter(has_text="before")).to_have_count(1)

            a.kill()  # the page's router, and the worker feeding it
            expect(alice.get("connection")).to_have_attribute("data-state", "reconnecting")
            for n in (1, 2, 3):
                missed = {"title": "Missed", "text": f"missed {n}"}
                send("tidings.publish", "tidings.user.1", missed)
            alice.connected()  # on node b now
            for n in (1, 2, 3):
                expect(alice.get("notification").filter(has_text=f"missed {n}")).to_have_count(1)
            recovered = re.compile(r"\d+ missed events? recovered")
            expect(alice.get("toast").filter(has_text=recovered)).to_be_visible()
            expect(alice.get("reload-needed")).to_be_hidden()
            alice.screenshot("failover-recovered")
            errors = pages.console_errors()
            assert not errors, errors
        finally:
            pages.close()
            a.stop()
            b.stop()
