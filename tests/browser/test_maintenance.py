"""Maintenance mode: a modal nobody can dismiss, on every page, within a second of `on`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import ARTIFACTS

TIDINGS = str(Path(sys.executable).parent / "tidings")


def maintenance(broker_url: str, *args: str) -> tuple[float, float]:
    """Run `tidings maintenance ...`; the wall-clock times it started and said "queued"."""
    started = time.time()
    with subprocess.Popen(
        [TIDINGS, "maintenance", *args],
        env={**os.environ, "TIDINGS_BROKER_URL": broker_url},
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        queued = time.time()
        assert proc.wait(60) == 0 and line.startswith("queued"), line
    return started, queued


def test_maintenance_modal_appears_on_every_page_and_cannot_be_dismissed(browsers, broker_url):
    alice = browsers.user("1", order="4301")
    left_on = True
    try:
        started, queued = maintenance(broker_url, "on", "--message", "Back at 14:00", "--by", "4")
        modal = alice.get("maintenance-modal")
        expect(modal).to_be_visible()
        shown_at = int(modal.get_attribute("data-shown-at") or 0) / 1000
        expect(alice.get("maintenance-message")).to_have_text("Back at 14:00")
        expect(alice.get("maintenance-since")).to_contain_text("by Dave")

        # Nothing closes it: Escape, a click on the backdrop; what is behind is inert.
        alice.page.keyboard.press("Escape")
        alice.page.mouse.click(10, 400)
        expect(modal).to_be_visible()
        assert alice.page.locator("main").evaluate("main => main.inert")

        # A page opened afterwards learns it at once.
        bob = browsers.user("2", order="4301")
        expect(bob.get("maintenance-modal")).to_be_visible()
        bob.screenshot("maintenance-modal")

        maintenance(broker_url, "off")
        left_on = False
        expect(modal).to_be_hidden()
        expect(bob.get("maintenance-modal")).to_be_hidden()
        assert not alice.page.locator("main").evaluate("main => main.inert")
        alice.screenshot("maintenance-off")
    finally:
        if left_on:  # never leave the session's other tests behind a modal
            maintenance(broker_url, "off")

    # The page stamps the moment it showed the modal (same machine, same clock).
    latency = {
        "command_start_to_modal_s": round(shown_at - started, 3),
        "task_queued_to_modal_s": round(shown_at - queued, 3),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "maintenance-latency.json").write_text(json.dumps(latency, indent=2))
    print(f"tidings maintenance on → modal shown: {latency}")
    # "Within a second" is the goal; the bound is loose because the CPU is shared.
    assert shown_at - started < 5, latency
