"""A WAMP session on its own event loop in a daemon thread, reconnecting with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager
from typing import Any, TypeVar

from autobahn.asyncio.wamp import ApplicationSession

from publisher import meters, rawsocket
from publisher.credentials import Credentials
from publisher.publish_meters import CONNECTED, RECONNECTS, TIMEOUTS
from publisher.session import Session

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds a connected transport may take to get a joined session before it is dropped.
JOIN_TIMEOUT = 30.0


class ConnectionClosed(RuntimeError):
    """The connection was closed: nothing more runs on it."""


# Per thread: the connections whose loop is to be woken when `gathered_wakes` ends.
_gathering = threading.local()


@contextmanager
def gathered_wakes() -> Iterator[None]:
    """Calls handed to any WampConnection by this thread inside the block wake its loop once,
    when the block ends: a burst of messages read together costs one wake-up, not one each.

    Keep the block short: other threads' calls to the same loop wait for its end too.
    """
    if getattr(_gathering, "due", None) is not None:
        yield  # nested: the outer block wakes
        return
    due: list[WampConnection] = []
    _gathering.due = due
    try:
        yield
    finally:
        _gathering.due = None
        for connection in due:
            connection._wake()


class WampConnection:
    """Keeps one WAMP session joined, on a private loop in a daemon thread.

    Work is handed to the loop with `submit()` (any thread). When the session
    drops, it reconnects with exponential backoff and jitter, forever, until
    `close()`.
    """

    def __init__(
        self,
        url: str,
        realm: str,
        credentials: Credentials,
        *,
        name: str = "tidings-wamp",
        on_join: Callable[[ApplicationSession], Awaitable[None]] | None = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 3.0,
        ack_deadline: float | None = None,
        metered: bool = False,
    ) -> None:
        """ack_deadline: drop the connection when a publish waited this long for its
        acknowledgement (see `_watch_acks`); None: never. metered: count its joins
        and losses in the process's meters (the Publisher's link)."""
        self._metered = metered
        self._counted_joined = False
        self.url = url
        self._ack_deadline = ack_deadline
        self._watchdog: asyncio.Future[None] | None = None
        self.realm = realm
        self._credentials = credentials
        self._on_join = on_join
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._session: Session | None = None
        self._joined = asyncio.Event()
        self._closing = False
        self._session_ended: asyncio.Future[None] | None = None
        self.last_error: str | None = None
        self.connects = 0
        self._started = False
        self._start_lock = threading.Lock()
        self._calls: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._calls_lock = threading.Lock()
        self._calls_due = False

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> WampConnection:
        if self._started:
            return self  # every publish passes here: no lock once running
        with self._start_lock:
            if not self._started and not self._closing:
                self._started = True
                self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Leave the session and release the connection's socket and loop before returning."""
        with self._start_lock:
            if self._closing:
                return
            self._closing = True
            if not self._started:
                self._loop.close()  # never ran; its selector and self-pipe go now
                return

        async def _leave() -> None:
            if self._watchdog is not None:
                self._watchdog.cancel()
            ended = self._session_ended
            if self._session is not None and self._session.is_attached():
                self._session.leave()
                if ended is not None:
                    # The router answers GOODBYE after acknowledging what came before
                    # it: waited for (briefly), those publishes complete, not fail.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(ended), min(1.0, timeout / 2))
            if ended is not None and not ended.done():
                ended.set_result(None)

        try:
            asyncio.run_coroutine_threadsafe(_leave(), self._loop).result(timeout)
        except Exception:  # the loop may already be gone; closing is best effort
            log.debug("error while leaving", exc_info=True)
        self._thread.join(timeout)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def closing(self) -> bool:
        """Whether close() was called: nothing more runs on this connection."""
        return self._closing

    def submit(self, coro: Awaitable[T]) -> Future[T]:
        """Run a coroutine on the session's loop; thread-safe. Raises ConnectionClosed
        once the connection is closing."""
        self.start()
        if self._closing:
            coro.close()  # type: ignore[attr-defined]  # never awaited: said so, not warned
            raise self._closed()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

    def _closed(self) -> ConnectionClosed:
        return ConnectionClosed(f"the WAMP connection to {self.url} is closed")

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` on the session's loop; thread-safe.

        Calls made while a wake-up of the loop is pending share it: a burst of
        publishes costs one write to the loop's self-pipe, not one each.
        """
        self.start()
        with self._calls_lock:
            self._calls.append((callback, args))
            if self._calls_due:
                return
            self._calls_due = True
        due = getattr(_gathering, "due", None)
        if due is not None:
            due.append(self)  # woken once, when this thread's burst ends
            return
        self._wake()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._run_calls)
        except RuntimeError:
            log.debug("the WAMP loop is closed; the calls are dropped")

    def _run_calls(self) -> None:
        with self._calls_lock:
            calls, self._calls = self._calls, []
            self._calls_due = False
        # What the batch sends goes out in one write.
        protocol = rawsocket.protocol_of(self._session)
        if protocol is not None:
            protocol.cork()
        try:
            for callback, args in calls:
                try:
                    callback(*args)
                except Exception:
                    log.exception("error in a call on the WAMP loop")
        finally:
            if protocol is not None:
                protocol.uncork()

    def joined_session(self) -> Session | None:
        """The joined session right now, or None; only on the session's loop."""
        session = self._session
        if session is not None and self._joined.is_set() and session.is_attached():
            return session
        return None

    async def session(self) -> ApplicationSession:
        """The joined session, waiting (on the session's loop) until there is one."""
        while True:
            await self._joined.wait()
            if self._session is not None and self._session.is_attached():
                return self._session
            self._joined.clear()

    def wait_joined(self, timeout: float) -> ApplicationSession:
        """Block the calling thread until the session has joined."""
        if self._closing:
            raise self._closed()  # before making coroutines that would never run
        try:
            return self.submit(asyncio.wait_for(self.session(), timeout)).result(timeout + 1)
        except CancelledError:
            raise self._closed() from None  # closed while waiting
        except TimeoutError as exc:
            raise TimeoutError(
                f"no WAMP session with {self.url} after {timeout:.1f}s"
                + (f" (last error: {self.last_error})" if self.last_error else "")
            ) from exc

    @property
    def is_joined(self) -> bool:
        return self._session is not None and self._session.is_attached()

    # -- the loop ----------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._connect_forever())
        finally:
            self._shut_loop()

    def _shut_loop(self) -> None:
        """Close the loop, and the transport it still holds, now: left to the garbage
        collector, each closed connection kept four file descriptors until a full
        collection, which a worker runs rarely (workers.heap): a task opening and
        closing a connection each time ran out of the router's connections."""
        loop = self._loop
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            # Also runs what closing the transport scheduled (its socket's close);
            # a task slow to end does not hold the thread.
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
            else:
                loop.run_until_complete(asyncio.sleep(0))
        finally:
            loop.close()

    async def _connect_forever(self) -> None:
        backoff = self._initial_backoff
        while not self._closing:
            joined = await self._connect_once()
            if self._closing:
                break
            if joined:
                backoff = self._initial_backoff
            # Jitter keeps a fleet of workers from reconnecting in lockstep.
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self._max_backoff)

    async def _connect_once(self) -> bool:
        self._session_ended = self._loop.create_future()
        self._attempt_joined = False

        def make_session() -> Session:
            session = Session(self.realm, self._credentials, self)
            self._session = session
            return session

        transport: asyncio.Transport | None = None
        try:
            factory, host, port = rawsocket.transport_factory(self.url, make_session)
            transport, protocol = await self._loop.create_connection(factory, host, port)
            # A connection that closes before a session exists (a proxy or load
            # balancer in front of a stopped router) fires no session callback:
            # watch the transport too, or this attempt would wait forever. A
            # peer that accepts but never lets the session join is dropped.
            ended = {self._session_ended, asyncio.ensure_future(protocol.is_closed)}
            done, _ = await asyncio.wait(
                ended, timeout=JOIN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            if not done and not self._attempt_joined:
                self.last_error = f"no session joined at {self.url} within {JOIN_TIMEOUT:.0f}s"
                transport.abort()
            if not done:
                await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
        except OSError as exc:
            self.last_error = f"cannot connect to {self.url}: {exc.strerror or exc}"
            log.debug(self.last_error)
        finally:
            if transport is not None:
                # The session ended, perhaps with the socket still open. Closing, what
                # is left to write is dropped: the loop stops and could not send it.
                transport.abort() if self._closing else transport.close()
            self._not_joined()
            self._session = None
        return self._attempt_joined

    # -- callbacks from Session --------------------------------------------
    _attempt_joined = False

    async def _joined_session(self, session: Session, details: Any) -> None:
        self.connects += 1
        if self._metered:
            if self.connects > 1:
                meters.add(RECONNECTS)
            if not self._counted_joined:
                self._counted_joined = True
                meters.add(CONNECTED)
        self._attempt_joined = True
        self.last_error = None
        if self._on_join is not None:
            await self._on_join(session)
        if self._ack_deadline:
            # Kept: the loop holds tasks only weakly.
            self._watchdog = asyncio.ensure_future(self._watch_acks(session, self._ack_deadline))
        self._joined.set()
        log.info("WAMP session %s joined %s at %s", details.session, self.realm, self.url)

    async def _watch_acks(self, session: Session, deadline: float) -> None:
        """Drop a connection on which acknowledgements stopped coming.

        A half-open TCP link (the router's host gone without a FIN) takes
        writes without error and never answers; TCP would give up only after
        many minutes, and every message behind the publishes in flight would
        wait unacked meanwhile. Aborting fails them with TransportLost, so
        they go out again on the next connection.
        """
        while session.is_attached():
            await asyncio.sleep(min(1.0, deadline / 4))
            sent = session.quick.oldest_sent()
            if sent is None:
                continue
            waited = time.monotonic() - sent
            protocol = rawsocket.protocol_of(session)
            if waited > deadline and protocol is not None:
                if self._metered:
                    meters.add(TIMEOUTS)
                self.last_error = f"no acknowledgement from {self.url} for {waited:.1f}s"
                log.warning("%s; dropping the connection", self.last_error)
                protocol.drop()
                return

    def _not_joined(self) -> None:
        self._joined.clear()
        if self._counted_joined:
            self._counted_joined = False
            meters.add(CONNECTED, -1)

    def oldest_wait(self) -> float:
        """Seconds the oldest publish in flight has waited for its acknowledgement (0: none);
        any thread."""
        session = self._session
        quick = getattr(session, "quick", None)
        for _ in range(3):
            try:
                sent = quick.oldest_sent() if quick is not None else None
            except RuntimeError:  # changed under us by the loop's thread: read again
                continue
            return 0.0 if sent is None else time.monotonic() - sent
        return 0.0

    def _left_session(self, session: Session, details: Any) -> None:
        self._not_joined()
        if details.reason not in ("wamp.close.normal", "wamp.close.goodbye_and_out"):
            self.last_error = f"{details.reason}: {details.message or ''}".strip(": ")
            log.warning("WAMP session left %s: %s", self.url, self.last_error)

    def _disconnected_session(self, session: Session) -> None:
        self._not_joined()
        if self._session_ended is not None and not self._session_ended.done():
            self._session_ended.set_result(None)
