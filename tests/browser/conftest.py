"""Browser fixtures: Debian's Chromium driven by Playwright, pages signed in as demo users."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.producers import app_client

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
# Test tools cannot download browsers here: the system's Chromium, headless, quiet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# The CPU is shared with other test runs: wait generously for what a person would see.
TIMEOUT_MS = 20_000
# Chromium reports a refused WebSocket while a router is down as a console error.
ROUTER_DOWN = re.compile(r"WebSocket connection to .* failed")


playwright_api.expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def browser() -> Iterator[playwright_api.Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """One page of the admin UI, with the console errors it printed."""

    page: playwright_api.Page
    errors: list[str] = field(default_factory=list)

    def get(self, name: str) -> playwright_api.Locator:
        return self.page.locator(f'[data-test="{name}"]')

    def connected(self) -> Tab:
        playwright_api.expect(self.get("connection")).to_have_attribute(
            "data-state", "connected", timeout=TIMEOUT_MS
        )
        return self

    def synced(self) -> Tab:
        """Connected, and the topics it followed before connecting are caught up."""
        playwright_api.expect(self.get("connection")).to_have_attribute(
            "data-synced", "true", timeout=TIMEOUT_MS
        )
        return self

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path


class Browsers:
    """Opens pages as demo users: one browser context per user, several tabs each."""

    def __init__(self, browser: playwright_api.Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.contexts: dict[str, playwright_api.BrowserContext] = {}
        self.tabs: list[Tab] = []
        self.expected_errors: re.Pattern[str] | None = None

    def context(self, key: str) -> playwright_api.BrowserContext:
        if key not in self.contexts:
            self.contexts[key] = self.browser.new_context(viewport={"width": 1280, "height": 860})
        return self.contexts[key]

    def open(self, query: str, *, as_: str | None = None, base_url: str | None = None) -> Tab:
        """Open `base_url + query` in the context `as_` (default: one per query's user)."""
        page = self.context(as_ or query).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        tab = Tab(page)
        page.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
        page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
        page.goto((base_url or self.base_url) + query)
        self.tabs.append(tab)
        return tab

    def user(self, user: str, order: str, **kwargs: str) -> Tab:
        return self.open(f"?user={user}&order={order}", as_=f"user-{user}", **kwargs).connected()

    def console_errors(self) -> list[str]:
        return [
            error
            for tab in self.tabs
            for error in tab.errors
            if not (self.expected_errors and self.expected_errors.search(error))
        ]

    def close(self) -> None:
        for context in self.contexts.values():
            context.close()


@pytest.fixture
def browsers(browser, router, worker) -> Iterator[Browsers]:
    """Pages on the session's router; the test fails on any console error of theirs."""
    opened = Browsers(browser, router.http_url)
    yield opened
    errors = opened.console_errors()
    opened.close()
    assert not errors, f"console errors: {errors}"


@pytest.fixture
def send_task(broker_url) -> Iterator[Callable[..., str]]:
    """Enqueue a tidings task as an application does (Celery, without importing tidings)."""
    app = app_client(broker_url)

    def send(name: str, *args: object, **kwargs: object) -> str:
        return str(app.send_task(name, list(args), kwargs, queue="tidings").id)

    yield send
    app.close()


@pytest.fixture
def send_task_to() -> Iterator[Callable[[str], Callable[..., str]]]:
    """Like `send_task`, on a broker of the test's choosing (its own vhost)."""
    apps: list[Any] = []

    def sender(broker_url: str) -> Callable[..., str]:
        app = app_client(broker_url)
        apps.append(app)

        def send(name: str, *args: object, **kwargs: object) -> str:
            return str(app.send_task(name, list(args), kwargs, queue="tidings").id)

        return send

    yield sender
    for app in apps:
        app.close()
