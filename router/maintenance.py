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
from autobahn.wamp.types import PublishOptions
from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThread

from stores.maintenance import make_store
from tidings import catalogue
from tidings.maintenance_state import OFF, valid
from tidings.names import MAINTENANCE_STATUS_PROCEDURE
from tidings.settings import Settings


class Maintenance(ApplicationSession):  # type: ignore[misc]
    """The router-side maintenance component; registers `tidings.maintenance.status`."""

    async def onJoin(self, details: Any) -> None:
        settings = Settings.from_environ(os.environ)
        cbdir = (self.config.extra or {}).get("cbdir") or settings.cbdir
        self.store = make_store(cbdir, settings.redis_url)
        # Blocking I/O (disk, Redis) runs in a thread: the reactor serves every session.
        self.state: dict[str, Any] | None = await deferToThread(self.store.load)
        self._saving = DeferredLock()
        loaded = self.state
        await self.subscribe(self._on_event, catalogue.MAINTENANCE_TOPIC)
        await self.register(self.status, MAINTENANCE_STATUS_PROCEDURE)
        # Only if no newer event came while subscribing: never overwrite it.
        if loaded is not None and self.state is loaded:
            await self.publish(
                catalogue.MAINTENANCE_TOPIC,
                loaded,
                options=PublishOptions(retain=True, acknowledge=True),
            )
        state = "on" if self.current()["enabled"] else "off"
        self.log.info("maintenance ready: {state}, kept in {store}", state=state, store=self.store)

    def current(self) -> dict[str, Any]:
        return self.state if self.state is not None else dict(OFF)

    def status(self) -> dict[str, Any]:
        """`tidings.maintenance.status()`: the last maintenance event, or "off"."""
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
