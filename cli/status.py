"""`tidings status`: is the broker, the router and a backend session reachable; queue depths."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cli.common import seconds
from tidings.names import (
    AUTHORIZE_PROCEDURE,
    BACKEND_AUTHID,
    BACKEND_ROLE,
    CONSUMED_QUEUES,
    DEAD_QUEUE,
    FRONTEND_ROLE,
    PUBLIC_PROCEDURES,
    REALM,
)
from tidings.settings import Settings

HELP = "broker, router, backend session, queues; exit status 1 if one is down"
# What the router-side components register: one missing means a component is down.
COMPONENT_PROCEDURES = (AUTHORIZE_PROCEDURE, *sorted(PUBLIC_PROCEDURES))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--timeout", type=seconds, default=5.0, help="seconds each check may take")


def run(args: argparse.Namespace, settings: Settings) -> int:
    health = check(settings, args.timeout)
    print(json.dumps(health.as_dict()) if args.json else render(health))
    # Not 2: nothing is wrong with the command; something is down (for health checks).
    return 1 if health.down else 0


@dataclass
class Queue:
    name: str
    messages: int | None = None  # ready, not counting those a worker holds unacked
    consumers: int | None = None  # None: the queue does not exist (yet)


@dataclass
class Health:
    broker: str | None = None  # None when fine, else what is wrong
    router: str | None = None
    session: str | None = None
    # Why the backend session was not tried (no secret to try it with): not "down".
    unchecked: str | None = None
    queues: list[Queue] = field(default_factory=list)
    browsers: int | None = None
    backends: int | None = None  # backend sessions other than this check's own
    # Procedures of the router-side components that are not registered.
    missing: list[str] = field(default_factory=list)
    # What the router's /health and the worker's /readyz say: None when not
    # asked or no answer (a worker on another host), else [] (ready) or why not.
    router_not_ready: list[str] | None = None
    worker_not_ready: list[str] | None = None

    @property
    def down(self) -> list[str]:
        """What is down, by name; empty when everything is up."""
        problems = [
            name
            for name, error in (
                ("broker", self.broker),
                ("router", self.router),
                ("backend session", self.session),
            )
            if error
        ]
        problems += [f"router component ({uri} not registered)" for uri in self.missing]
        if self.router is None and self.router_not_ready:
            problems.append(f"router not ready ({'; '.join(self.router_not_ready)})")
        if self.worker_not_ready:
            problems.append(f"worker not ready ({'; '.join(self.worker_not_ready)})")
        if self.broker is None:
            problems += [
                f"worker (no consumer on {q.name})"
                for q in self.queues
                if q.name in CONSUMED_QUEUES and not q.consumers
            ]
        return problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.down,
            "down": self.down,
            "broker": self.broker or "ok",
            "router": self.router or "ok",
            "backend_session": self.session
            or (f"not checked: {self.unchecked}" if self.unchecked else "ok"),
            "queues": {
                q.name: {"messages": q.messages, "consumers": q.consumers} for q in self.queues
            },
            "sessions": {"browsers": self.browsers, "backend": self.backends},
            "missing_procedures": self.missing,
            "router_health": _said(self.router_not_ready),
            "worker_readiness": _said(self.worker_not_ready),
        }


def _said(reasons: list[str] | None) -> str:
    if reasons is None:
        return "no answer"
    return "ok" if not reasons else "not ready: " + "; ".join(reasons)


def check(config: Settings, timeout: float = 5.0) -> Health:
    """Look at every part once; never raises for a part that is down."""
    health = Health()
    _check_broker(config, health, timeout)
    _check_router(config, health, timeout)
    _check_endpoints(config, health, timeout)
    return health


def _check_endpoints(config: Settings, health: Health, timeout: float) -> None:
    """The router's /health (on its web port) and this host's worker's /readyz."""
    host = urlsplit(config.router_url).hostname or "127.0.0.1"
    web = config.http_port or _configured_web_port(config) or 8080
    health.router_not_ready = _not_ready(f"http://{host}:{web}/health", timeout)
    if config.worker_metrics_port:
        url = f"http://127.0.0.1:{config.worker_metrics_port}/readyz"
        health.worker_not_ready = _not_ready(url, timeout)


def _not_ready(url: str, timeout: float) -> list[str] | None:
    """[] when `url` answers 200, the reasons it gives with 503, None when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return []
    except urllib.error.HTTPError as error:
        try:
            reasons = json.loads(error.read()).get("why") or [f"HTTP {error.code}"]
        except ValueError:
            reasons = [f"HTTP {error.code}"]
        return [str(reason) for reason in reasons]
    except OSError:
        return None


def _configured_web_port(config: Settings) -> int | None:
    try:
        router = json.loads((config.cbdir / "config.json").read_text())
        for transport in router["workers"][0]["transports"]:
            if transport["type"] == "web":
                return int(transport["endpoint"]["port"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    return None


def _check_broker(config: Settings, health: Health, timeout: float) -> None:
    from kombu import Connection

    try:
        with Connection(config.broker_url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            channel = conn.channel()
            for name in (*CONSUMED_QUEUES, DEAD_QUEUE):
                try:
                    _, messages, consumers = channel.queue_declare(name, passive=True)
                    health.queues.append(Queue(name, messages, consumers))
                except conn.channel_errors:
                    # Not declared yet: no worker has ever started on this broker.
                    health.queues.append(Queue(name))
                    channel = conn.channel()  # a failed passive declare closes the channel
    except Exception as exc:
        where = Connection(config.broker_url).as_uri()  # without the password
        health.broker = f"cannot reach {where}: {exc}"


def _check_router(config: Settings, health: Health, timeout: float) -> None:
    parts = urlsplit(config.router_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 8081
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        health.router = f"nothing accepts connections at {config.router_url}: {exc}"
        health.session = "not tried: the router is unreachable"
        return
    if not config.backend_secret:
        health.unchecked = (
            "no secret to sign in with (set TIDINGS_BACKEND_SECRET, "
            "or TIDINGS_DEV=1 for the development stack of `make run`)"
        )
        return
    try:
        health.browsers, health.backends, health.missing = _ask_router(config, timeout)
    except Exception as exc:
        health.session = str(exc) or type(exc).__name__


def _ask_router(config: Settings, timeout: float) -> tuple[int, int, list[str]]:
    """(browser sessions, other backend sessions, the components' procedures that are
    not registered), from the router's meta API."""
    from publisher.connection import WampConnection
    from publisher.credentials import Credentials

    credentials = Credentials(BACKEND_AUTHID, "wampcra", config.require_backend_secret())
    connection = WampConnection(config.router_url, REALM, credentials, name="tidings-status")

    async def count() -> tuple[int, int, list[str]]:
        session = await connection.session()
        browsers = await session.call("wamp.session.count", [FRONTEND_ROLE])
        backends = await session.call("wamp.session.count", [BACKEND_ROLE])
        missing = [
            uri
            for uri in COMPONENT_PROCEDURES
            if await session.call("wamp.registration.lookup", uri) is None
        ]
        # Not counting this check's own session.
        return int(browsers), int(backends) - 1, missing

    try:
        return connection.submit(asyncio.wait_for(count(), timeout)).result(timeout + 1)
    except TimeoutError:
        why = connection.last_error or "no session joined"
        raise RuntimeError(
            f"no backend session at {config.router_url} in {timeout:.0f}s: {why}"
        ) from None
    finally:
        connection.close()


def render(health: Health) -> str:
    """The report for people, one part a line."""

    def state(error: str | None) -> str:
        return f"DOWN  {error}" if error else "ok"

    session = f"not checked: {health.unchecked}" if health.unchecked else state(health.session)
    lines = [
        f"broker           {state(health.broker)}",
        f"router           {state(health.router)}",
        f"backend session  {session}",
    ]
    if health.missing:
        lines.append(f"components       DOWN  not registered: {', '.join(health.missing)}")
    if health.browsers is not None:
        lines.append(
            f"sessions         {health.browsers} browser, {health.backends} backend (workers, "
            "components)"
        )
    lines.append(f"router health    {_said(health.router_not_ready)}")
    lines.append(f"worker           {_said(health.worker_not_ready)} (its /readyz on this host)")
    for q in health.queues:
        if q.consumers is None:
            lines.append(f"queue {q.name:<20} not declared yet (no worker has started)")
        elif q.name == DEAD_QUEUE:
            lines.append(f"queue {q.name:<20} {q.messages} dead letters")
        else:
            lines.append(f"queue {q.name:<20} {q.messages} waiting, {q.consumers} consumers")
    down = health.down
    lines.append("status           " + (f"DOWN: {', '.join(down)}" if down else "ok"))
    return "\n".join(lines)
