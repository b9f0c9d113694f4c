"""Where maintenance mode's state is kept across restarts: a JSON file in the router's
directory, or one Redis key when TIDINGS_REDIS_URL is set."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from tidings.maintenance_state import valid

log = logging.getLogger(__name__)

STATE_FILE = "maintenance.json"
REDIS_KEY = "tidings:maintenance"


class StateStore(Protocol):
    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


class FileStore:
    """A JSON file, replaced atomically so that a crash never leaves half a state."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return str(self.path)

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

    def __repr__(self) -> str:
        return f"Redis key {REDIS_KEY}"

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
