"""The settings of tidings, built from an environment mapping and passed in; never read at import.

Each process builds them once where it starts (`Settings.from_environ(os.environ)`)
and hands them down. Every value is cast and checked here, and a wrong one
raises ConfigError naming the variable and what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from tidings.errors import ConfigError

# Development secrets: only ever used when TIDINGS_DEV=1.
DEV_SECRET = "tidings-dev-ticket-secret-not-for-production"
DEV_BACKEND_SECRET = "tidings-dev-backend-secret-not-for-production"

# The checkout (or the folder the packages were installed from): where
# `.crossbar/` and `web/` are found by default.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Outside development, secrets shorter than this are refused: an HMAC key
# or WAMP-CRA secret must not be guessable.
MIN_SECRET_BYTES = 32

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_ROUTER_URL = "rs://127.0.0.1:8081"

T = TypeVar("T")
_NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class Limits:
    """What one browser may hold or ask of the router (router/guards.py enforces them)."""

    # Messages one session, and all sessions of one address, send per second
    # (twice as many in a burst). A page loading a record sends a handful; an
    # office behind one NAT address is many pages.
    message_rate: float = 50.0
    address_rate: float = 1000.0
    # Bytes of a topic or procedure URI.
    uri_bytes: int = 512
    # Subscriptions one session holds at once.
    subscriptions: int = 1000
    # Calls one session makes per second (twice as many in a burst), and has
    # unanswered at once.
    call_rate: float = 20.0
    calls_in_flight: int = 16
    # Bytes the router holds for one session that does not read its socket;
    # past this the session is dropped (it recovers after reconnecting).
    unsent_bytes: int = 4 << 20
    # Seconds a connection may stay without a joined session, and without having
    # sent its request headers.
    hello_timeout: float = 5.0
    request_timeout: float = 10.0
    # WebSocket connections from one address at once; 0: no limit.
    connections_per_address: int = 100
    # Chat messages one user sends per second, over all their tabs (twice as
    # many in a burst).
    chat_rate: float = 5.0


@dataclass(frozen=True)
class Settings:
    broker_url: str = DEFAULT_BROKER_URL
    router_url: str = DEFAULT_ROUTER_URL
    secret: str | None = None
    backend_secret: str | None = None
    dev: bool = False
    redis_url: str | None = None
    cbdir: Path = PROJECT_ROOT / ".crossbar"
    # Seconds a publish waits for the router's acknowledgement.
    publish_timeout: float = 10.0
    # Times a message that failed for a passing reason is handed back to its
    # queue before it is dead-lettered instead.
    max_redeliveries: int = 10
    # Missed-event recovery (router/history.py): events kept per topic, and
    # bounds on the number of topics and on the bytes held in all.
    history_size: int = 100
    history_topics: int = 10_000
    history_bytes: int = 64 * 1024 * 1024
    # Shared mode: seconds a topic's history lives after its last event.
    history_ttl: int = 86_400
    # This router node, and its ports (web and WebSocket; loopback RawSocket for
    # backends); None: the ports of `.crossbar/config.json`.
    node: str = "a"
    http_port: int | None = None
    backend_port: int | None = None
    # Shared mode: each node's delivery queue, bounded in bytes, removed after
    # this many seconds without a consumer (its browsers recover from history).
    node_queue_bytes: int = 256 * 1024 * 1024
    node_queue_expires: int = 3600
    # Loopback ports of the Prometheus endpoints (the worker's also answers
    # /livez and /readyz); 0: off.
    router_metrics_port: int = 9464
    worker_metrics_port: int = 9465
    # "plain" (the default) or "json": one JSON object per log line.
    log_format: str = "plain"
    limits: Limits = Limits()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings the variables in `environ` give; ConfigError if one is wrong."""
        read = _Reader(environ)
        dev = read.flag("TIDINGS_DEV")
        backend_port = read.port("TIDINGS_BACKEND_PORT")
        # The processes that feed a node reach it on its backend port by default.
        local = f"rs://127.0.0.1:{backend_port}" if backend_port else DEFAULT_ROUTER_URL
        return cls(
            broker_url=read.url("TIDINGS_BROKER_URL", DEFAULT_BROKER_URL, ("amqp", "amqps")),
            router_url=read.url("TIDINGS_ROUTER_URL", local, ("rs", "ws")),
            secret=read.secret("TIDINGS_SECRET", dev, DEV_SECRET),
            backend_secret=read.secret("TIDINGS_BACKEND_SECRET", dev, DEV_BACKEND_SECRET),
            dev=dev,
            redis_url=read.optional_url("TIDINGS_REDIS_URL", ("redis", "rediss", "unix")),
            cbdir=Path(read.text("TIDINGS_CBDIR") or PROJECT_ROOT / ".crossbar"),
            publish_timeout=read.number("TIDINGS_PUBLISH_TIMEOUT", 10.0, float, "seconds"),
            max_redeliveries=read.number("TIDINGS_MAX_REDELIVERIES", 10, int, "a whole number"),
            history_size=read.number("TIDINGS_HISTORY_SIZE", 100, int, "a whole number"),
            history_topics=read.number("TIDINGS_HISTORY_TOPICS", 10_000, int, "a whole number"),
            history_bytes=read.number("TIDINGS_HISTORY_BYTES", 64 << 20, int, "bytes"),
            history_ttl=read.number("TIDINGS_HISTORY_TTL", 86_400, int, "seconds"),
            node=read.name("TIDINGS_NODE", "a"),
            http_port=read.port("TIDINGS_HTTP_PORT"),
            backend_port=backend_port,
            node_queue_bytes=read.number("TIDINGS_NODE_QUEUE_BYTES", 256 << 20, int, "bytes"),
            node_queue_expires=read.number("TIDINGS_NODE_QUEUE_EXPIRES", 3600, int, "seconds"),
            router_metrics_port=read.optional_port("TIDINGS_ROUTER_METRICS_PORT", 9464),
            worker_metrics_port=read.optional_port("TIDINGS_WORKER_METRICS_PORT", 9465),
            log_format=read.choice("TIDINGS_LOG_FORMAT", ("plain", "json")),
            limits=Limits(
                message_rate=read.number("TIDINGS_MESSAGE_RATE", 50.0, float, "per second"),
                address_rate=read.number("TIDINGS_ADDRESS_RATE", 1000.0, float, "per second"),
                uri_bytes=read.number("TIDINGS_MAX_URI_BYTES", 512, int, "bytes"),
                subscriptions=read.number("TIDINGS_MAX_SUBSCRIPTIONS", 1000, int, "a whole number"),
                call_rate=read.number("TIDINGS_CALL_RATE", 20.0, float, "calls per second"),
                calls_in_flight=read.number("TIDINGS_MAX_CALLS_IN_FLIGHT", 16, int, "calls"),
                unsent_bytes=read.number("TIDINGS_MAX_UNSENT_BYTES", 4 << 20, int, "bytes"),
                hello_timeout=read.number("TIDINGS_HELLO_TIMEOUT", 5.0, float, "seconds"),
                request_timeout=read.number("TIDINGS_REQUEST_TIMEOUT", 10.0, float, "seconds"),
                connections_per_address=read.number(
                    "TIDINGS_MAX_CONNECTIONS_PER_ADDRESS", 100, int, "connections", zero=True
                ),
                chat_rate=read.number("TIDINGS_CHAT_RATE", 5.0, float, "messages per second"),
            ),
        )

    def require_secret(self) -> str:
        return _required(self.secret, "TIDINGS_SECRET", "the ticket signing key")

    def require_backend_secret(self) -> str:
        what = "the backend WAMP-CRA secret"
        return _required(self.backend_secret, "TIDINGS_BACKEND_SECRET", what)


def _required(value: str | None, name: str, what: str) -> str:
    if not value:
        raise ConfigError(f"{name} is not set: set it to {what} (or TIDINGS_DEV=1 for development)")
    return value


class _Reader:
    """One cast per kind of value, one error type."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str) -> str:
        return self.environ.get(name, "").strip()

    def flag(self, name: str) -> bool:
        value = self.text(name).lower()
        if value in {"", "0", "false", "no", "off"}:
            return False
        if value in {"1", "true", "yes", "on"}:
            return True
        raise ConfigError(f"{name}={value!r} is not a yes/no value; use 1 or 0")

    def number(
        self, name: str, default: T, cast: Callable[[str], T], unit: str, zero: bool = False
    ) -> T:
        text = self.text(name)
        if not text:
            return default
        try:
            value = cast(text)
        except ValueError:
            value = None
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name}={text!r} is not a positive number ({unit}); fix or unset it")
        if value == 0 and not zero:
            raise ConfigError(f"{name}={text!r} is not a positive number ({unit}); fix or unset it")
        return value

    def name(self, name: str, default: str) -> str:
        text = self.text(name) or default
        if not _NODE_NAME.fullmatch(text):
            raise ConfigError(f"{name}={text!r} must be 1 to 32 letters, digits, '_' or '-'")
        return text

    def port(self, name: str) -> int | None:
        if not self.text(name):
            return None
        value = self.number(name, 0, int, "a TCP port")
        if value > 65535:
            raise ConfigError(f"{name}={value} is not a TCP port (1 to 65535)")
        return value

    def optional_port(self, name: str, default: int) -> int:
        """A port that 0 turns off."""
        text = self.text(name)
        if text == "0":
            return 0
        return self.port(name) or default

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        """One of `choices`, the first by default."""
        text = self.text(name).lower() or choices[0]
        if text not in choices:
            raise ConfigError(f"{name}={text!r} must be one of: {', '.join(choices)}")
        return text

    def secret(self, name: str, dev: bool, dev_default: str) -> str | None:
        """A secret: in development, the built-in one where none is set; elsewhere at
        least MIN_SECRET_BYTES long."""
        text = self.environ.get(name, "")
        if not text:
            return dev_default if dev else None
        if not dev and len(text.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{name} is {len(text.encode())} bytes; it must be at least {MIN_SECRET_BYTES} "
                "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return text

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        return self.optional_url(name, schemes) or default

    def optional_url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        text = self.text(name)
        if not text:
            return None
        scheme = urlsplit(text).scheme
        if scheme not in schemes:
            wanted = " or ".join(f"{s}://" for s in schemes)
            raise ConfigError(f"{name} must be a {wanted} URL, not {text!r}")
        return text
