"""Configuration of tidings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BACKEND_AUTHID = "tidings-backend"
BACKEND_ROLE = "backend"
FRONTEND_ROLE = "frontend"
REALM = "tidings"

# Development secrets: only ever used when TIDINGS_DEV=1.
DEV_SECRET = "tidings-dev-ticket-secret-not-for-production"
DEV_BACKEND_SECRET = "tidings-dev-backend-secret-not-for-production"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which and what to do."""


@dataclass(frozen=True)
class Settings:
    broker_url: str
    router_url: str
    secret: str | None
    backend_secret: str | None
    dev: bool
    redis_url: str | None
    cbdir: Path
    publish_timeout: float
    # Missed-event recovery (publisher/history.py): events kept per topic, and
    # bounds on the number of topics and on the bytes held in all.
    history_size: int = 100
    history_topics: int = 10_000
    history_bytes: int = 64 * 1024 * 1024

    def require_secret(self) -> str:
        if not self.secret:
            raise ConfigError(
                "TIDINGS_SECRET is not set: set it to the ticket signing key "
                "(or TIDINGS_DEV=1 for development)"
            )
        return self.secret

    def require_backend_secret(self) -> str:
        if not self.backend_secret:
            raise ConfigError(
                "TIDINGS_BACKEND_SECRET is not set: set it to the backend WAMP-CRA secret "
                "(or TIDINGS_DEV=1 for development)"
            )
        return self.backend_secret


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _positive_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={text!r} is not a positive whole number; fix or unset it")
    return value


def load() -> Settings:
    """Read the settings from the environment (uncached; see `settings()`)."""
    dev = _flag("TIDINGS_DEV")
    return Settings(
        broker_url=os.environ.get("TIDINGS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        router_url=os.environ.get("TIDINGS_ROUTER_URL", "rs://127.0.0.1:8081"),
        secret=os.environ.get("TIDINGS_SECRET") or (DEV_SECRET if dev else None),
        backend_secret=os.environ.get("TIDINGS_BACKEND_SECRET")
        or (DEV_BACKEND_SECRET if dev else None),
        dev=dev,
        redis_url=os.environ.get("TIDINGS_REDIS_URL") or None,
        cbdir=Path(os.environ.get("TIDINGS_CBDIR", PROJECT_ROOT / ".crossbar")),
        publish_timeout=float(os.environ.get("TIDINGS_PUBLISH_TIMEOUT", "10")),
        history_size=_positive_int("TIDINGS_HISTORY_SIZE", 100),
        history_topics=_positive_int("TIDINGS_HISTORY_TOPICS", 10_000),
        history_bytes=_positive_int("TIDINGS_HISTORY_BYTES", 64 * 1024 * 1024),
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read on first use."""
    return load()
