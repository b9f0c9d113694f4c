"""Maintenance mode's state: kept across restarts, re-published, and `tidings.maintenance.status`.

A router-side component (`.crossbar/config.json`). It hears every event on
`tidings.maintenance` (published, retained, by the workers), writes the latest
to `<cbdir>/maintenance.json` (or Redis when TIDINGS_REDIS_URL is set), and
when the router starts it publishes that state again, retained, so that
browsers connecting after a restart learn it at once.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.types import PublishOptions
from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThread

from publisher import topics
from tidings.settings import settings

log = logging.getLogger(__name__)

STATUS_PROCEDURE = "tidings.maintenance.status"
STATE_FILE = "maintenance.json"
REDIS_KEY = "tidings:maintenance"
OFF: dict[str, Any] = {"enabled": False, "message": None, "by": None, "at": None}


class StateStore(Protocol):
    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


class FileStore:
    """A JSON file, replaced atomically so that a crash never leaves half a state."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("ignoring %s: not JSON", self.path)
            return None
        return state if valid(state) else None

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".maintenance-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class RedisStore:
    """One Redis key: shared by several routers, and kept wherever the router runs."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def load(self) -> dict[str, Any] | None:
        raw = self._redis.get(REDIS_KEY)
        if raw is None:
            return None
        try:
            state = json.loads(raw)
        except ValueError:
            return None
        return state if valid(state) else None

    def save(self, state: dict[str, Any]) -> None:
        self._redis.set(REDIS_KEY, json.dumps(state))


def make_store(cbdir: str | Path, redis_url: str | None) -> StateStore:
    return RedisStore(redis_url) if redis_url else FileStore(Path(cbdir) / STATE_FILE)


def valid(state: Any) -> bool:
    return isinstance(state, dict) and isinstance(state.get("enabled"), bool)


class Maintenance(ApplicationSession):  # type: ignore[misc]
    """The router-side maintenance component; registers `tidings.maintenance.status`."""

    async def onJoin(self, details: Any) -> None:
        cbdir = (self.config.extra or {}).get("cbdir") or settings().cbdir
        self.store = make_store(cbdir, settings().redis_url)
        # Blocking I/O (disk, Redis) runs in a thread: the reactor serves every session.
        self.state: dict[str, Any] | None = await deferToThread(self.store.load)
        self._saving = DeferredLock()
        loaded = self.state
        await self.subscribe(self._on_event, topics.MAINTENANCE_TOPIC)
        await self.register(self.status, STATUS_PROCEDURE)
        # Only if no newer event came while subscribing: never overwrite it.
        if loaded is not None and self.state is loaded:
            await self.publish(
                topics.MAINTENANCE_TOPIC,
                loaded,
                options=PublishOptions(retain=True, acknowledge=True),
            )
        log.info("maintenance ready: %s", "on" if self.current()["enabled"] else "off")

    def current(self) -> dict[str, Any]:
        return self.state if self.state is not None else dict(OFF)

    def status(self) -> dict[str, Any]:
        """`tidings.maintenance.status()`: the last maintenance event, or "off"."""
        return self.current()

    def _on_event(self, payload: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not valid(payload):
            log.warning("ignoring a maintenance event without a true/false 'enabled'")
            return None
        self.state = payload
        # One write at a time, in the order heard: the file ends at the latest state.
        done = self._saving.run(deferToThread, self.store.save, payload)
        done.addErrback(lambda failure: log.error("cannot keep maintenance state: %s", failure))
        return done
