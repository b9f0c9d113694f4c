"""The record form: presence, the outdated notice, the other-tab notice and a working reload."""

from __future__ import annotations

from playwright.sync_api import expect


def test_two_users_see_each_other_and_each_others_changes(browsers):
    alice = browsers.user("1", order="4201")
    bob = browsers.user("2", order="4201")
    bob_other_tab = browsers.user("2", order="4201")

    expect(alice.get("presence")).to_have_text("Bob is also editing this record")
    expect(bob.get("presence")).to_have_text("Alice is also editing this record")

    bob.get("field-status").select_option("shipped")
    bob.get("field-total").fill("99.5")
    bob.get("save").click()
    expect(bob.get("save-status")).to_have_text("Saved (status, total).")

    expect(alice.get("outdated-text")).to_have_text(
        "This record was changed by Bob (status, total) — reload"
    )
    expect(bob_other_tab.get("outdated-text")).to_have_text(
        "You changed this record in another tab"
    )
    alice.screenshot("record-outdated-notice")
    bob_other_tab.screenshot("record-other-tab")
    # The tab that saved is not told about its own change.
    expect(bob.get("outdated-notice")).to_be_hidden()

    alice.get("reload").click()
    expect(alice.get("outdated-notice")).to_be_hidden()
    expect(alice.get("field-status")).to_have_value("shipped")
    expect(alice.get("field-total")).to_have_value("99.50")

    # Bob leaves (both tabs): Alice's presence line goes.
    bob.page.close()
    expect(alice.get("presence")).to_have_text("Bob is also editing this record")
    bob_other_tab.page.close()
    expect(alice.get("presence")).to_be_hidden()
