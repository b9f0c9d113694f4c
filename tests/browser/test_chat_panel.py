"""The chat panel: rooms from the ticket, who is here, messages as text, history for latecomers."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.browser.conftest import Browsers, Tab
from tests.browser.test_recovery import LINK_DOWN, WS, Link


def enter(tab: Tab, room: str) -> Tab:
    button = tab.get("chat-rooms").locator(f'[data-room="{room}"]')
    button.click()
    expect(button).to_have_attribute("aria-pressed", "true")
    expect(tab.get("chat-topic")).to_have_text(f"tidings.chat.{room}")
    return tab


def say(tab: Tab, text: str) -> None:
    tab.get("chat-input").fill(text)
    tab.get("chat-input").press("Enter")
    expect(tab.get("chat-input")).to_have_value("")  # cleared once the router took it


def test_members_chat_see_each_other_and_latecomers_get_the_history(browsers: Browsers):
    alice = browsers.open("?user=1").connected()
    bob = browsers.open("?user=2").connected()
    dialogs: list[str] = []
    for tab in (alice, bob):
        tab.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        enter(tab, "ops")

    expect(alice.get("chat-here")).to_contain_text("Bob")
    expect(bob.get("chat-here")).to_contain_text("Alice")

    # Markup in a message is shown as what was typed, never made into elements.
    tag = uuid.uuid4().hex[:8]
    markup = f"<img src=x onerror=alert(1)> hi {tag}"
    say(alice, markup)
    received = bob.get("chat-message").filter(has_text=tag)
    expect(received).to_have_count(1)
    expect(received.locator('[data-test="chat-from"]')).to_have_text("Alice")
    assert received.locator('[data-test="chat-text"]').text_content() == markup
    expect(bob.get("chat-messages").locator("img")).to_have_count(0)

    answer = f"Seen it, Alice ({tag})"
    bob.get("chat-input").fill(answer)
    bob.get("chat-send").click()
    expect(bob.get("chat-input")).to_have_value("")
    expect(alice.get("chat-text").filter(has_text=answer)).to_have_count(1)
    expect(alice.get("chat-message").last.locator('[data-test="chat-from"]')).to_have_text("Bob")

    # The router's refusal is shown, and the text stays for another try.
    too_long = "x" * 4097
    bob.get("chat-input").fill(too_long)
    bob.get("chat-input").press("Enter")
    expect(bob.get("chat-error")).to_have_text("Not sent: text is at most 4096 bytes.")
    expect(bob.get("chat-input")).to_have_value(too_long)

    # Carol's ticket holds chat:lobby:join only.
    carol = browsers.open("?user=3").connected()
    expect(carol.get("chat-room")).to_have_text(["lobby"])
    expect(carol.get("chat-topic")).to_have_text("tidings.chat.lobby")

    # Dave comes later: the room's history brings what was said, once each.
    dave = enter(browsers.open("?user=4").connected(), "ops")
    expect(dave.get("chat-text").filter(has_text=tag)).to_have_text([markup, answer])
    expect(dave.get("chat-messages").locator("img")).to_have_count(0)
    expect(alice.get("chat-here")).to_contain_text("Dave")
    alice.screenshot("chat")

    dave.page.close()
    expect(alice.get("chat-here")).not_to_contain_text("Dave")
    expect(bob.get("chat-here")).to_contain_text("Alice")
    assert dialogs == []


def test_a_page_back_from_a_cut_link_has_what_was_said_and_who_is_here(browsers: Browsers):
    browsers.expected_errors = LINK_DOWN
    link = Link()
    browsers.context("bob").route_web_socket(WS, link.route)
    alice = enter(browsers.open("?user=1").connected(), "lobby")
    bob = enter(browsers.open("?user=2", as_="bob").connected(), "lobby")
    expect(alice.get("chat-here")).to_contain_text("Bob")
    tag = uuid.uuid4().hex[:8]
    say(alice, f"before the cut {tag}")
    # One live before the cut, one recovered after it, one live again: in order, once each.
    expect(bob.get("chat-text").filter(has_text=tag)).to_have_count(1)

    link.cut()
    expect(bob.get("connection")).to_have_attribute("data-state", "reconnecting")
    expect(alice.get("chat-here")).not_to_contain_text("Bob")
    say(alice, f"while you were away {tag}")

    link.up = True
    bob.connected()
    expect(bob.get("chat-text").filter(has_text=f"while you were away {tag}")).to_have_count(1)
    expect(alice.get("chat-here")).to_contain_text("Bob")
    expect(bob.get("chat-here")).to_contain_text("Alice")
    say(bob, f"back {tag}")
    expect(alice.get("chat-text").filter(has_text=f"back {tag}")).to_have_count(1)
    expect(bob.get("chat-text").filter(has_text=tag)).to_have_text(
        [f"before the cut {tag}", f"while you were away {tag}", f"back {tag}"]
    )
