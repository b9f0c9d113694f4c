"""The live chart, the private notification list, and signing in (dev picker, embedding hook)."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect

from harness.processes import TEST_SECRET
from tidings import tickets

SEVERAL = re.compile(r"^([5-9]|\d{2,})$")  # five points or more


def test_the_chart_draws_the_demo_price_feed(browsers):
    alice = browsers.user("1", order="4401")
    expect(alice.get("chart-empty")).to_be_visible()
    alice.get("feed-start").click()
    expect(alice.get("chart")).to_have_attribute("data-points", SEVERAL)
    expect(alice.get("chart-empty")).to_be_hidden()
    expect(alice.get("chart-last")).to_have_text(re.compile(r"^\d+\.\d\d$"))
    path = alice.get("chart").locator(".chart-line").get_attribute("d") or ""
    assert path.count("L") >= 4, path
    alice.screenshot("chart")


def test_private_notifications_arrive_once_and_only_for_their_user(browsers, send_task):
    carol = browsers.user("3", order="4402")
    dave = browsers.user("4", order="4402")
    notice = {"title": "Export ready", "text": "orders-2026.csv", "event_id": f"n-{uuid.uuid4()}"}
    send_task("tidings.publish", "tidings.user.3", notice)
    send_task("tidings.publish", "tidings.user.3", notice)  # a redelivery: same event_id
    send_task("tidings.publish", "tidings.user.4", {"title": "For Dave", "text": "only Dave"})

    items = carol.get("notification")
    expect(items.filter(has_text="orders-2026.csv")).to_have_count(1)
    expect(dave.get("notification").filter(has_text="only Dave")).to_have_count(1)
    expect(dave.get("notification").filter(has_text="orders-2026.csv")).to_have_count(0)

    carol.get("notify-self").click()
    expect(items.filter(has_text="Hello Carol")).to_have_count(1)

    # A page opened later shows what the router still holds for this user.
    later = browsers.user("3", order="4402")
    expect(later.get("notification").filter(has_text="orders-2026.csv")).to_have_count(1)
    carol.screenshot("notifications")
    # The second event with the same id never showed: dropped as a duplicate.
    expect(items.filter(has_text="orders-2026.csv")).to_have_count(1)


def test_an_embedding_app_signs_the_page_in_through_its_hook(browsers, send_task):
    issued: list[str] = []

    def issue_ticket() -> str:
        issued.append(tickets.issue(TEST_SECRET, "50", [], ttl=60))
        return issued[-1]

    context = browsers.context("app")
    context.expose_function("issueTicketForTest", issue_ticket)
    context.add_init_script(
        "window.tidingsTicket = () => window.issueTicketForTest();"
        "window.tidingsUserNames = {'50': 'Erin'};"
    )
    erin = browsers.open("", as_="app").connected()
    expect(erin.get("user-name")).to_have_text("Erin")
    expect(erin.get("switch-user")).to_be_hidden()
    expect(erin.get("save")).to_be_disabled()
    # Her ticket holds no entity permission: the router refuses the record.
    expect(erin.get("record-refused")).to_contain_text("You may not view order records")
    send_task("tidings.publish", "tidings.user.50", {"title": "Welcome", "text": "Hi Erin"})
    expect(erin.get("notification").filter(has_text="Hi Erin")).to_have_count(1)
    erin.screenshot("embedded-hook")
    assert len(issued) == 1


def test_the_dev_user_picker_signs_in_as_the_chosen_user(browsers):
    page = browsers.open("?order=4403", as_="picker")
    expect(page.get("user-picker")).to_be_visible()
    page.get("pick-user-2").click()
    page.connected()
    expect(page.get("user-name")).to_have_text("Bob")
    expect(page.get("user-topic")).to_have_text("tidings.user.2")
    expect(page.get("record-title")).to_have_text("Order #4403")
