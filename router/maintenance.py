"""Maintenance mode's state: kept across restarts, re-published, and `tidings.maintenance.status`.

A router-side component (`.crossbar/config.json`). It hears every event on
`tidings.maintenance` (published, retained, by the workers), writes the latest
to `<cbdir>/maintenance.json` (or Redis when TIDINGS_REDIS_URL is set), and
when the router starts it publishes that state again, retained, so that
browsers connecting after a restart learn it at once.
"""

from __future__ import annotations

import os
from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet.defer import DeferredLock, ensureDeferred
from twisted.internet.threads import deferToThread

from router import meters
from router.later import sleep
from router.principals import browser_errors
from stores.maintenance import make_store
from tidings import catalogue
from tidings.errors import UNAVAILABLE
from tidings.maintenance_state import OFF, valid
from tidings.names import MAINTENANCE_STATUS_PROCEDURE
from tidings.settings import Settings

# Seconds between attempts to load the saved state while its store is unreachable.
RETRY_FIRST, RETRY_MAX = 0.5, 10.0


class Maintenance(ApplicationSession):  # type: ignore[misc]
    """The router-side maintenance component; registers `tidings.maintenance.status`.

    It registers and subscribes first and loads the saved state after, retrying
    while its store (Redis) is unreachable: until then `status` answers
    `tidings.error.unavailable`, never a missing procedure.
    """

    async def onJoin(self, details: Any) -> None:
        settings = Settings.from_environ(os.environ)
        cbdir = (self.config.extra or {}).get("cbdir") or settings.cbdir
        self.store = make_store(cbdir, settings.redis_url)
        self.state: dict[str, Any] | None = None
        self.loaded = False
        self._saving = DeferredLock()
        meters.ready("maintenance", "loading its state")
        await self.subscribe(self._on_event, catalogue.MAINTENANCE_TOPIC)
        await self.register(self.status, MAINTENANCE_STATUS_PROCEDURE)
        ensureDeferred(self._load())

    def onLeave(self, details: Any) -> None:
        meters.ready("maintenance", "left the realm")
        super().onLeave(details)

    async def _load(self) -> None:
        delay = RETRY_FIRST
        while self.is_attached():
            try:
                # Blocking I/O (disk, Redis) runs in a thread: the reactor serves everyone.
                saved = await deferToThread(self.store.load)
                break
            except Exception as exc:
                meters.ready("maintenance", "its store is unreachable")
                self.log.warn(
                    "cannot load the maintenance state from {store} ({why}); trying again in "
                    "{delay:.1f} s",
                    store=self.store,
                    why=exc,
                    delay=delay,
                )
                await sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        else:
            return
        self.loaded = True
        meters.ready("maintenance")
        # A newer event heard meanwhile wins over the saved one.
        if saved is not None and self.state is None:
            self.state = saved
            await self.publish(
                catalogue.MAINTENANCE_TOPIC,
                saved,
                options=PublishOptions(retain=True, acknowledge=True),
            )
        state = "on" if self.current()["enabled"] else "off"
        self.log.info("maintenance ready: {state}, kept in {store}", state=state, store=self.store)

    def current(self) -> dict[str, Any]:
        return self.state if self.state is not None else dict(OFF)

    @browser_errors
    async def status(self) -> dict[str, Any]:
        """`tidings.maintenance.status()`: the last maintenance event, or "off"."""
        if not self.loaded and self.state is None:
            raise ApplicationError(
                UNAVAILABLE, "the maintenance state is not loaded yet; try again"
            )
        return self.current()

    def _on_event(self, payload: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not valid(payload):
            self.log.warn("ignoring a maintenance event without a true/false 'enabled'")
            return None
        self.state = payload
        # One write at a time, in the order heard: the file ends at the latest state.
        done = self._saving.run(deferToThread, self.store.save, payload)
        done.addErrback(lambda f: self.log.error("cannot keep maintenance state: {why}", why=f))
        return done
