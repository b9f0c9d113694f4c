"""A WAMP session on its own event loop in a daemon thread, reconnecting with backoff."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgpack
from autobahn.asyncio.rawsocket import WampRawSocketClientFactory, WampRawSocketClientProtocol
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp import auth as wamp_auth
from autobahn.wamp.exception import ApplicationError, SerializationError, TransportLost
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds a connected transport may take to get a joined session before it is dropped.
JOIN_TIMEOUT = 30.0
# How autobahn encodes MsgPack, for messages sent without its message objects.
_packb = functools.partial(msgpack.packb, use_bin_type=True)
# WAMP message types of an acknowledged publish.
_PUBLISH, _PUBLISHED, _ERROR = 16, 17, 8


@dataclass(frozen=True)
class Credentials:
    """How a session authenticates: WAMP-CRA with a secret, or WAMP-Ticket.

    `secret` may be a callable so that one-time tickets are fetched anew for
    every connection attempt.
    """

    authid: str | None
    method: str  # "wampcra" or "ticket"
    secret: str | Callable[[], str]

    def current_secret(self) -> str:
        return self.secret() if callable(self.secret) else self.secret


class JoinRefused(RuntimeError):
    """The router refused to let the session join (bad credentials)."""


class _Session(ApplicationSession):
    def __init__(self, realm: str, credentials: Credentials, owner: WampConnection) -> None:
        super().__init__(ComponentConfig(realm=realm))
        self._credentials = credentials
        self._owner = owner
        # Quick publishes awaiting the router's reply, by request id, oldest
        # first: how to complete each, and when it was sent.
        self.quick: dict[int, tuple[Callable[[BaseException | None], None], float]] = {}

    def publish_quick(
        self,
        topic: str,
        payload: Any,
        options: dict[str, Any],
        done: Callable[[BaseException | None], None],
    ) -> bool:
        """An acknowledged PUBLISH without autobahn's per-message objects and futures.

        `done` gets None on the router's acknowledgement, ApplicationError on
        its refusal, TransportLost if the connection goes first. False: this
        transport cannot (WebSocket); use `publish`. Raises TransportLost or
        SerializationError like `publish`.
        """
        transport = self._transport
        if not isinstance(transport, _CorkableRawSocket):
            return False
        request = self._request_id_gen.next()
        self.quick[request] = (done, time.monotonic())
        try:
            transport.send_raw([_PUBLISH, request, options, topic, [payload]])
        except Exception:
            del self.quick[request]
            raise
        return True

    def onConnect(self) -> None:
        self.join(
            self.config.realm,
            authmethods=[self._credentials.method],
            authid=self._credentials.authid,
        )

    def onChallenge(self, challenge: Any) -> str:
        secret = self._credentials.current_secret()
        if challenge.method == "wampcra":
            key: str | bytes = secret
            if "salt" in challenge.extra:
                key = wamp_auth.derive_key(
                    secret,
                    challenge.extra["salt"],
                    challenge.extra.get("iterations", 1000),
                    challenge.extra.get("keylen", 32),
                )
            signature = wamp_auth.compute_wcs(key, challenge.extra["challenge"])
            return signature.decode("ascii") if isinstance(signature, bytes) else signature
        if challenge.method == "ticket":
            return secret
        raise JoinRefused(f"router asked for unsupported auth method {challenge.method!r}")

    async def onJoin(self, details: Any) -> None:
        await self._owner._joined_session(self, details)

    def onLeave(self, details: Any) -> None:
        self._owner._left_session(self, details)
        self.disconnect()

    def onDisconnect(self) -> None:
        self._owner._disconnected_session(self)
        # Fail requests still awaiting the router's reply with TransportLost
        # (onLeave above does not): otherwise a publish in flight when the
        # router went away would wait forever instead of going out again on
        # the next session.
        quick, self.quick = self.quick, {}
        for done, _ in quick.values():
            _reply(done, TransportLost())
        super().onDisconnect()


def _refusal(message: list[Any]) -> BaseException:
    """The router's ERROR reply to a PUBLISH as autobahn would raise it."""
    try:
        args = message[5] if len(message) > 5 else []
        kwargs = message[6] if len(message) > 6 else {}
        return ApplicationError(message[4], *args, **kwargs)
    except Exception:
        return ApplicationError(ApplicationError.INVALID_ARGUMENT, f"malformed ERROR {message!r}")


def _reply(done: Callable[[BaseException | None], None], error: BaseException | None) -> None:
    try:
        done(error)
    except Exception:
        log.exception("completing a publish failed")


class _CorkableRawSocket(WampRawSocketClientProtocol):  # type: ignore[misc]
    """RawSocket that writes a message as one segment, and a corked batch as one write.

    autobahn writes the 4-byte length prefix and the message separately: two
    syscalls, and two TCP segments for the router to read, per publish.
    """

    _corked: list[bytes] | None = None

    def sendString(self, data: bytes) -> None:
        if len(data) > self.max_length_send:
            raise ValueError("Data too big")
        frame = struct.pack(self.prefix_format, len(data)) + data
        if self._corked is not None:
            self._corked.append(frame)
        else:
            self.transport.write(frame)

    def send_raw(self, message: list[Any]) -> None:
        """Send a WAMP message given as its list form, as autobahn would marshal it."""
        self._send_encoded(_packb, message)

    def stringReceived(self, payload: bytes) -> None:
        quick = getattr(self._session, "quick", None)
        if quick:
            # The acknowledgement of a quick publish completes it here; any
            # other message goes through autobahn as usual.
            try:
                message = msgpack.unpackb(payload, raw=False)
            except Exception:
                message = None
            if type(message) is list and len(message) >= 3:
                if message[0] == _PUBLISHED and message[1] in quick:
                    _reply(quick.pop(message[1])[0], None)
                    return
                if message[0] == _ERROR and message[1] == _PUBLISH and message[2] in quick:
                    error = _refusal(message)
                    _reply(quick.pop(message[2])[0], error)
                    return
        super().stringReceived(payload)

    def send(self, msg: Any) -> None:
        # autobahn's own send formats a debug line per message, logged or not.
        self._send_encoded(lambda m: self._serializer.serialize(m)[0], msg)

    def _send_encoded(self, encode: Callable[[Any], bytes], message: Any) -> None:
        if not self.isOpen():
            raise TransportLost()
        try:
            data = encode(message)
        except Exception as exc:
            raise SerializationError(f"unable to serialize WAMP message ({exc})") from exc
        self.sendString(data)

    def cork(self) -> None:
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        frames, self._corked = self._corked, None
        if frames and self.transport is not None:
            self.transport.write(b"".join(frames))


def _transport_factory(url: str, make_session: Callable[[], _Session]) -> tuple[Any, str, int]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "rs":
        # MsgPack: the backend link carries every event; it is the cheaper codec.
        rawsocket = WampRawSocketClientFactory(make_session, serializer=MsgPackSerializer())
        rawsocket.protocol = _CorkableRawSocket
        return rawsocket, host, parts.port or 8081
    if parts.scheme == "ws":
        factory = WampWebSocketClientFactory(make_session, url=url, serializers=[JsonSerializer()])
        return factory, host, parts.port or 80
    raise ValueError(f"unsupported router URL {url!r}: use rs://host:port or ws://host:port/path")


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
    ) -> None:
        """ack_deadline: drop the connection when a publish waited this long for its
        acknowledgement (see `_watch_acks`); None: never."""
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
        self._session: _Session | None = None
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
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        if not self._started or self._closing:
            return
        self._closing = True

        async def _leave() -> None:
            if self._watchdog is not None:
                self._watchdog.cancel()
            if self._session is not None and self._session.is_attached():
                self._session.leave()
            if self._session_ended is not None and not self._session_ended.done():
                self._session_ended.set_result(None)

        try:
            asyncio.run_coroutine_threadsafe(_leave(), self._loop).result(timeout)
        except Exception:  # the loop may already be gone; closing is best effort
            log.debug("error while leaving", exc_info=True)
        self._thread.join(timeout)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, coro: Awaitable[T]) -> Future[T]:
        """Run a coroutine on the session's loop; thread-safe."""
        self.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

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
        self._loop.call_soon_threadsafe(self._run_calls)

    def _run_calls(self) -> None:
        with self._calls_lock:
            calls, self._calls = self._calls, []
            self._calls_due = False
        # What the batch sends goes out in one write.
        transport = getattr(self._session, "_transport", None)
        protocol = transport if isinstance(transport, _CorkableRawSocket) else None
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

    def joined_session(self) -> _Session | None:
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
        try:
            return self.submit(asyncio.wait_for(self.session(), timeout)).result(timeout + 1)
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
        self._loop.run_until_complete(self._connect_forever())

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

        def make_session() -> _Session:
            session = _Session(self.realm, self._credentials, self)
            self._session = session
            return session

        try:
            factory, host, port = _transport_factory(self.url, make_session)
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
            self._joined.clear()
            self._session = None
        return self._attempt_joined

    # -- callbacks from _Session --------------------------------------------
    _attempt_joined = False

    async def _joined_session(self, session: _Session, details: Any) -> None:
        self.connects += 1
        self._attempt_joined = True
        self.last_error = None
        if self._on_join is not None:
            await self._on_join(session)
        if self._ack_deadline:
            # Kept: the loop holds tasks only weakly.
            self._watchdog = asyncio.ensure_future(self._watch_acks(session, self._ack_deadline))
        self._joined.set()
        log.info("WAMP session %s joined %s at %s", details.session, self.realm, self.url)

    async def _watch_acks(self, session: _Session, deadline: float) -> None:
        """Drop a connection on which acknowledgements stopped coming.

        A half-open TCP link (the router's host gone without a FIN) takes
        writes without error and never answers; TCP would give up only after
        many minutes, and every message behind the publishes in flight would
        wait unacked meanwhile. Aborting fails them with TransportLost, so
        they go out again on the next connection.
        """
        while session.is_attached():
            await asyncio.sleep(min(1.0, deadline / 4))
            if not session.quick:
                continue
            _, sent = next(iter(session.quick.values()))  # the oldest
            waited = time.monotonic() - sent
            protocol = session._transport
            if waited > deadline and isinstance(protocol, _CorkableRawSocket):
                self.last_error = f"no acknowledgement from {self.url} for {waited:.1f}s"
                log.warning("%s; dropping the connection", self.last_error)
                protocol.transport.abort()
                return

    def _left_session(self, session: _Session, details: Any) -> None:
        self._joined.clear()
        if details.reason not in ("wamp.close.normal", "wamp.close.goodbye_and_out"):
            self.last_error = f"{details.reason}: {details.message or ''}".strip(": ")
            log.warning("WAMP session left %s: %s", self.url, self.last_error)

    def _disconnected_session(self, session: _Session) -> None:
        self._joined.clear()
        if self._session_ended is not None and not self._session_ended.done():
            self._session_ended.set_result(None)
