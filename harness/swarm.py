"""Browser-like WebSocket sessions in a child process, joined with tickets, timestamping arrivals.

One `Swarm` is one process holding `count` sessions on one asyncio loop: one
session is the throughput subscriber, hundreds are a fan-out audience, and
thousands of idle ones measure what the router pays per connection.

With `recover=True` each session behaves like the page's (web/js/live.js) when its
router goes: it reconnects with backoff and a new ticket, subscribes again, and
asks `tidings.history.since` for what it missed, dropping duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import multiprocessing as mp
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any
from urllib.parse import urlsplit

from harness.wamp_ws import CallError, WampSubscriber
from tidings import tickets
from tidings.errors import HISTORY_GAP
from tidings.names import HISTORY_PROCEDURE, REALM

# Handshakes in flight at once per process: enough to keep the router busy,
# few enough that none times out waiting for the CPU.
CONNECTING = 64
PERMS = ["entity:bench:view"]

# What a swarm reports per event number: [sent at, sessions that got it, first, last arrival].
Arrival = list[float]
# A page's reconnect delays (web/js/live.js): 0.5 s, then 1.5 times longer up to 4 s, ±20 %.
FIRST_DELAY, MAX_DELAY = 0.5, 4.0
# Pages of history one catch-up asks for at most, and tries after an error other than a gap.
CATCH_UP_PAGES, CATCH_UP_TRIES = 200, 20


class _Browser:
    """One recovering session slot: its connections one after another, what it received
    (by event number), and when it had caught up."""

    def __init__(self, index: int) -> None:
        from harness.recovering import Topic  # only recovering swarms pay for the import

        self.index = index
        self.session: WampSubscriber | None = None
        self.seen: set[int] = set()
        self.place = Topic()
        self.delay = FIRST_DELAY
        self.joins = 0
        # The latest arrival of an event sent before the session it came on had joined:
        # once every such event is in, the page has recovered what it missed.
        self.caught = 0.0
        self.duplicates = self.recovered = self.gaps = self.errors = 0

    def report(self, sent: int) -> dict[str, Any]:
        session = self.session
        return {
            "joins": self.joins,
            "joined_at": session.joined_at if session is not None else None,
            "caught": self.caught,
            "missing": sum(1 for n in range(sent) if n not in self.seen),
            "duplicates": self.duplicates,
            "recovered": self.recovered,
            "gaps": self.gaps,
            "errors": self.errors,
        }


class _SwarmLoop:
    """Runs in the child: connects the sessions and records arrivals."""

    def __init__(
        self,
        url: str,
        secret: str,
        count: int,
        topic: str | None,
        name: str,
        perms: list[str],
        recover: bool = False,
    ) -> None:
        self.url = url
        self.secret = secret
        self.count = count
        self.topic = topic
        self.name = name
        self.perms = perms
        self.recover = recover
        self.sessions: list[WampSubscriber] = []
        self.browsers: list[_Browser] = []
        self.arrivals: dict[int, Arrival] = {}
        self.received: Synchronized[int] | None = None
        # Why sessions did not join: "ECONNREFUSED", "EMFILE", "timeout", "refused", ...
        self.failures: Counter[str] = Counter()
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

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
        if self.recover:
            left = sum(1 for browser in self.browsers if browser.session is None)
        else:
            left = sum(1 for session in self.sessions if session.closed.done())
        answer.set_result((dict(self.arrivals), left))
        self.arrivals.clear()

    def recovery(self, answer: Future[list[dict[str, Any]]], sent: int) -> None:
        answer.set_result([browser.report(sent) for browser in self.browsers])

    async def connect_all(self) -> tuple[int, float]:
        gate = asyncio.Semaphore(CONNECTING)

        async def one(i: int) -> bool:
            async with gate:
                if self.recover:
                    browser = _Browser(i)
                    self.browsers.append(browser)
                    return await self._join(browser)
                session = await self._open(f"{self.name}-{i}", self.on_event)
                if session is None:
                    return False
                self.sessions.append(session)
                return True

        started = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(self.count)))
        return sum(results), time.monotonic() - started

    async def _open(
        self,
        user: str,
        on_event: Callable[[dict[str, Any], float], None],
        made: list[WampSubscriber] | None = None,
    ) -> WampSubscriber | None:
        """One session of `user` with a new ticket, joined and subscribed; None if not.
        `made` gets the session as soon as it exists: an event may come in the same read
        as SUBSCRIBED, before this coroutine goes on."""
        ticket = tickets.issue(self.secret, user, self.perms, 3600)
        session = WampSubscriber(self.host, self.port, REALM, ticket, self.topic, on_event)
        if made is not None:
            made.append(session)
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: session, self.host, self.port
            )
            ok = await asyncio.wait_for(session.joined, 30)
        except TimeoutError:
            self.failures["timeout"] += 1
            ok = False
        except OSError as exc:
            self.failures[errno.errorcode.get(exc.errno or 0, type(exc).__name__)] += 1
            return None
        else:
            if not ok:
                self.failures["refused"] += 1
        if not ok:
            if session.transport is not None:
                session.transport.close()
            return None
        return session

    # -- recovering sessions (recover=True)

    async def _join(self, browser: _Browser) -> bool:
        holder: list[WampSubscriber] = []

        def on_event(payload: dict[str, Any], now: float) -> None:
            self._browser_event(browser, holder[0], payload, now)

        session = await self._open(f"{self.name}-{browser.index}", on_event, holder)
        if session is None:
            return False
        browser.session = session
        browser.joins += 1
        browser.delay = FIRST_DELAY
        session.closed.add_done_callback(lambda _: self._lost(browser, session))
        return True

    def _lost(self, browser: _Browser, session: WampSubscriber) -> None:
        if browser.session is session:
            browser.session = None
            self._retry(browser)

    def _retry(self, browser: _Browser) -> None:
        delay = browser.delay * random.uniform(0.8, 1.2)
        browser.delay = min(browser.delay * 1.5, MAX_DELAY)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: loop.create_task(self._rejoin(browser)))

    async def _rejoin(self, browser: _Browser) -> None:
        if not await self._join(browser):
            self._retry(browser)
            return
        assert browser.session is not None
        await self._catch_up(browser, browser.session)

    async def _catch_up(self, browser: _Browser, session: WampSubscriber) -> None:
        """What the topic missed, page by page, as the page asks for it after a reconnect."""
        after = browser.place.resume_from()
        pages = tries = 0
        while pages < CATCH_UP_PAGES and not session.closed.done():
            try:
                missed = await session.call(HISTORY_PROCEDURE, self.topic, after)
            except CallError as exc:
                if exc.error == HISTORY_GAP:
                    browser.gaps += 1
                    return
                browser.errors += 1
                tries += 1
                if tries >= CATCH_UP_TRIES:
                    return
                await asyncio.sleep(0.25)
                continue
            except ConnectionError:
                return  # the next session catches up
            if not missed:
                return
            pages += 1
            now = time.time()
            for event in missed:
                if self._browser_event(browser, session, event, now):
                    browser.recovered += 1
            after = missed[-1].get("position") or missed[-1]["event_id"]

    def _browser_event(
        self, browser: _Browser, session: WampSubscriber, payload: dict[str, Any], now: float
    ) -> bool:
        """Count an event once per browser; False for a duplicate."""
        browser.place.saw(payload)
        n = payload["n"]
        if n in browser.seen:
            browser.duplicates += 1
            return False
        browser.seen.add(n)
        joined_at = session.joined_at
        if joined_at is not None and payload["t"] < joined_at:
            browser.caught = max(browser.caught, now)
        self.on_event(payload, now)
        return True


def _child(
    url: str,
    secret: str,
    count: int,
    topic: str | None,
    name: str,
    perms: list[str],
    pipe: Connection,
    received: Synchronized[int],
    recover: bool = False,
) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    swarm = _SwarmLoop(url, secret, count, topic, name, perms, recover)
    swarm.received = received
    joined, seconds = loop.run_until_complete(swarm.connect_all())
    pipe.send(("joined", joined, seconds, dict(swarm.failures)))

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
            answer: Future[Any] = Future()
            if isinstance(command, tuple) and command[0] == "recovery":
                loop.call_soon_threadsafe(swarm.recovery, answer, command[1])
            else:
                loop.call_soon_threadsafe(swarm.collect, answer)
            pipe.send(answer.result())

    threading.Thread(target=serve_commands, daemon=True).start()
    loop.run_forever()


class Swarm:
    """`count` authenticated WebSocket sessions in their own process, subscribed to `topic`.

    `recover`: each session reconnects when it is lost and recovers what it missed
    from the history (see the module docstring); `recovery()` says how each did.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        count: int,
        topic: str | None = None,
        name: str = "swarm",
        perms: list[str] | None = None,
        *,
        recover: bool = False,
    ) -> None:
        if recover and topic is None:
            raise ValueError("a recovering swarm needs a topic to recover")
        self.count = count
        ctx = mp.get_context("spawn")
        self._pipe, child_pipe = ctx.Pipe()
        self.received: Synchronized[int] = ctx.Value("q", 0, lock=False)  # type: ignore[assignment]
        args = (url, secret, count, topic, name, perms or PERMS, child_pipe, self.received, recover)
        self.process = ctx.Process(target=_child, args=args, name=f"bench-{name}", daemon=True)
        self.joined = 0
        self.connect_seconds = 0.0
        # Why sessions did not join, by kind (an errno name, "timeout", "refused").
        self.failures: dict[str, int] = {}

    def start(self) -> Swarm:
        self.process.start()
        return self

    def wait_joined(self, timeout: float) -> Swarm:
        if not self._pipe.poll(timeout):
            raise TimeoutError(f"{self.count} sessions did not finish joining in {timeout:.0f}s")
        _, self.joined, self.connect_seconds, self.failures = self._pipe.recv()
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

    def recovery(self, sent: int, timeout: float = 30) -> list[dict[str, Any]]:
        """Per session of a recovering swarm: joins, when its session joined (epoch s),
        `caught` (when the last event sent before then arrived), events of 0..sent-1
        `missing`, `duplicates` dropped, events `recovered` from the history, `gaps`
        (history_gap answers) and other `errors` of its catch-up calls."""
        self._pipe.send(("recovery", sent))
        if not self._pipe.poll(timeout):
            raise TimeoutError("the client process did not answer")
        reports: list[dict[str, Any]] = self._pipe.recv()
        return reports

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
