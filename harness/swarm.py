"""Browser-like WebSocket sessions in a child process, joined with tickets, timestamping arrivals.

One `Swarm` is one process holding `count` sessions on one asyncio loop: one
session is the throughput subscriber, hundreds are a fan-out audience, and
thousands of idle ones measure what the router pays per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any
from urllib.parse import urlsplit

from harness.wamp_ws import WampSubscriber
from tidings import tickets
from tidings.names import REALM

# Handshakes in flight at once per process: enough to keep the router busy,
# few enough that none times out waiting for the CPU.
CONNECTING = 64
PERMS = ["entity:bench:view"]

# What a swarm reports per event number: [sent at, sessions that got it, first, last arrival].
Arrival = list[float]


class _SwarmLoop:
    """Runs in the child: connects the sessions and records arrivals."""

    def __init__(
        self, url: str, secret: str, count: int, topic: str | None, name: str, perms: list[str]
    ) -> None:
        self.url = url
        self.secret = secret
        self.count = count
        self.topic = topic
        self.name = name
        self.perms = perms
        self.sessions: list[WampSubscriber] = []
        self.arrivals: dict[int, Arrival] = {}
        self.received: Synchronized[int] | None = None

    def on_event(self, payload: dict[str, Any], now: float) -> None:
        # A chat message carries the number and send time in its text.
        stamp = payload if "n" in payload else json.loads(payload["text"])
        n = stamp["n"]
        seen = self.arrivals.get(n)
        if seen is None:
            self.arrivals[n] = [stamp["t"], 1.0, now, now]
        else:
            seen[1] += 1
            seen[3] = now
        if self.received is not None:
            self.received.value += 1

    def collect(self, answer: Future[tuple[dict[int, Arrival], int]]) -> None:
        left = sum(1 for session in self.sessions if session.closed.done())
        answer.set_result((dict(self.arrivals), left))
        self.arrivals.clear()

    async def connect_all(self) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        gate = asyncio.Semaphore(CONNECTING)

        async def one(i: int) -> bool:
            async with gate:
                ticket = tickets.issue(self.secret, f"{self.name}-{i}", self.perms, 3600)
                session = WampSubscriber(host, port, REALM, ticket, self.topic, self.on_event)
                try:
                    await loop.create_connection(lambda: session, host, port)
                    ok = await asyncio.wait_for(session.joined, 30)
                except (OSError, TimeoutError):
                    return False
                self.sessions.append(session)
                return ok

        started = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(self.count)))
        return sum(results), time.monotonic() - started


def _child(
    url: str,
    secret: str,
    count: int,
    topic: str | None,
    name: str,
    perms: list[str],
    pipe: Connection,
    received: Synchronized[int],
) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    swarm = _SwarmLoop(url, secret, count, topic, name, perms)
    swarm.received = received
    joined, seconds = loop.run_until_complete(swarm.connect_all())
    pipe.send(("joined", joined, seconds))

    def serve_commands() -> None:
        while True:
            try:
                command = pipe.recv()
            except EOFError:
                command = "close"
            if command == "close":
                loop.call_soon_threadsafe(loop.stop)
                return
            # The arrivals belong to the loop's thread: hand them over there.
            answer: Future[tuple[dict[int, Arrival], int]] = Future()
            loop.call_soon_threadsafe(swarm.collect, answer)
            pipe.send(answer.result())

    threading.Thread(target=serve_commands, daemon=True).start()
    loop.run_forever()


class Swarm:
    """`count` authenticated WebSocket sessions in their own process, subscribed to `topic`."""

    def __init__(
        self,
        url: str,
        secret: str,
        count: int,
        topic: str | None = None,
        name: str = "swarm",
        perms: list[str] | None = None,
    ) -> None:
        self.count = count
        ctx = mp.get_context("spawn")
        self._pipe, child_pipe = ctx.Pipe()
        self.received: Synchronized[int] = ctx.Value("q", 0, lock=False)  # type: ignore[assignment]
        self.process = ctx.Process(
            target=_child,
            args=(url, secret, count, topic, name, perms or PERMS, child_pipe, self.received),
            name=f"bench-{name}",
            daemon=True,
        )
        self.joined = 0
        self.connect_seconds = 0.0

    def start(self) -> Swarm:
        self.process.start()
        return self

    def wait_joined(self, timeout: float) -> Swarm:
        if not self._pipe.poll(timeout):
            raise TimeoutError(f"{self.count} sessions did not finish joining in {timeout:.0f}s")
        _, self.joined, self.connect_seconds = self._pipe.recv()
        return self

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def collect(self, timeout: float = 30) -> tuple[dict[int, Arrival], int]:
        """Arrivals since the last collect, by event number, and how many sessions left."""
        self._pipe.send("collect")
        if not self._pipe.poll(timeout):
            raise TimeoutError("the client process did not answer")
        arrivals, left = self._pipe.recv()
        return arrivals, left

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe.send("close")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def merge(parts: list[dict[int, Arrival]]) -> dict[int, Arrival]:
    """One view of arrivals across several swarms: counts add up, first/last widen."""
    merged: dict[int, Arrival] = {}
    for part in parts:
        for n, (sent, count, first, last) in part.items():
            seen = merged.get(n)
            if seen is None:
                merged[n] = [sent, count, first, last]
            else:
                seen[1] += count
                seen[2] = min(seen[2], first)
                seen[3] = max(seen[3], last)
    return merged
