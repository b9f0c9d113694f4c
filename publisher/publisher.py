"""The Publisher: one long-lived backend WAMP session per process; publishes are acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import InvalidStateError
from functools import partial
from typing import Any

from autobahn.wamp.exception import ApplicationError, SerializationError, TransportLost
from autobahn.wamp.types import PublishOptions

from publisher import meters
from publisher.acked import Acked
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from publisher.publish_meters import ACK_SECONDS, PUBLISHED
from tidings import catalogue
from tidings.errors import PublishRefused, PublishTimeout
from tidings.names import BACKEND_AUTHID, REALM
from tidings.settings import Settings

log = logging.getLogger(__name__)


class Publisher:
    """Publishes events through one authenticated WAMP session, from any thread.

    `publish()` returns once the router has acknowledged the event. While the
    router is unreachable, publishes wait for the reconnect (bounded by the
    timeout) instead of failing at once, so short outages lose nothing.
    """

    def __init__(self, config: Settings | None = None, *, name: str = "tidings-publisher") -> None:
        self._settings = config or Settings.from_environ(os.environ)
        self.connection = WampConnection(
            self._settings.router_url,
            REALM,
            Credentials(BACKEND_AUTHID, "wampcra", self._settings.require_backend_secret()),
            name=name,
            ack_deadline=self._settings.publish_timeout,
            metered=True,
        )

    @property
    def timeout(self) -> float:
        """Seconds `publish()` waits for the router's acknowledgement by default."""
        return self._settings.publish_timeout

    def start(self) -> Publisher:
        self.connection.start()
        return self

    def close(self) -> None:
        self.connection.close()

    def publish(
        self,
        topic: str,
        payload: Any,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> None:
        """Publish and wait for the router's acknowledgement.

        options: exclude_authids, eligible_authids, exclude_sessions, retain.
        Raises PublishTimeout after `timeout` seconds (default
        TIDINGS_PUBLISH_TIMEOUT), PublishRefused if the router refuses, and
        UnknownTopic for a topic outside the catalogue.
        """
        limit = self._settings.publish_timeout if timeout is None else timeout
        future = self.publish_async(topic, payload, **options)
        try:
            future.result(limit)
        except TimeoutError:
            future.cancel()
            raise PublishTimeout(
                f"router at {self.connection.url} did not acknowledge {topic!r} within {limit:.1f}s"
                + (f" ({self.connection.last_error})" if self.connection.last_error else "")
            ) from None

    def publish_async(self, topic: str, payload: Any, **options: Any) -> Acked:
        """Start a publish; the future completes on the router's acknowledgement.

        Cancelling the future before the publish went out keeps it from going out.
        """
        catalogue.family(topic)
        publish_options = _publish_options(**options) if options else _PLAIN
        future = Acked()
        if self.connection.closing:
            _complete(future, _closed(self.connection))  # nothing would ever send it
            return future
        self.connection.call_soon(self._start, topic, payload, publish_options, future)
        return future

    # -- on the session's loop ------------------------------------------------
    def _start(self, topic: str, payload: Any, options: PublishOptions, future: Acked) -> None:
        # The common case costs no task and no coroutine: publish on the joined
        # session and complete the future from the acknowledgement's callback.
        if future.cancelled():
            return
        session = self.connection.joined_session()
        if session is None:
            self._publish_later(topic, payload, options, future)
            return
        try:
            details = _PLAIN_DETAILS if options is _PLAIN else options.message_attr()
            done = partial(self._replied, topic, payload, options, future)
            if session.publish_quick(topic, payload, details, done):
                return
            started = time.monotonic()
            acked = session.publish(topic, payload, options=options)
        except TransportLost:
            self._publish_later(topic, payload, options, future)
            return
        except Exception as exc:
            # Raised here, not by the acknowledgement (e.g. a payload MsgPack
            # cannot encode): fail this publish, or its message would wait for
            # an acknowledgement that never comes and hold up every ack behind it.
            error = PublishRefused(f"cannot encode {topic!r}: {exc}")
            _complete(future, error if isinstance(exc, SerializationError) else exc)
            return
        acked.add_done_callback(partial(self._acked, topic, payload, options, future, started))

    def _acked(
        self,
        topic: str,
        payload: Any,
        options: PublishOptions,
        future: Acked,
        started: float,
        acked: Any,
    ) -> None:
        error = acked.exception()
        if error is None:
            _count_published(started)
        self._replied(topic, payload, options, future, error)

    def _replied(
        self,
        topic: str,
        payload: Any,
        options: PublishOptions,
        future: Acked,
        error: BaseException | None,
    ) -> None:
        if isinstance(error, TransportLost):
            self._publish_later(topic, payload, options, future)
        else:
            _complete(future, _refused(topic, error) if error else None)

    def _publish_later(
        self, topic: str, payload: Any, options: PublishOptions, future: Acked
    ) -> None:
        async def publish() -> None:
            try:
                await self._publish(topic, payload, options)
            except asyncio.CancelledError:
                # The connection closed with the publish unsent: its caller hears so.
                _complete(future, _closed(self.connection))
                raise
            except Exception as exc:
                _complete(future, exc)
            else:
                _complete(future, None)

        task = asyncio.ensure_future(publish())
        loop = self.connection.loop

        def stop_if_cancelled(done: Acked) -> None:
            # A caller that gave up (timeout) cancels the future: stop retrying too.
            if done.cancelled():
                with contextlib.suppress(RuntimeError):  # the connection closed: nothing runs
                    loop.call_soon_threadsafe(task.cancel)

        future.add_done_callback(stop_if_cancelled)

    async def _publish(self, topic: str, payload: Any, options: PublishOptions) -> None:
        while True:
            session = await self.connection.session()
            try:
                started = time.monotonic()
                await session.publish(topic, payload, options=options)
                _count_published(started)
                return
            except TransportLost:
                # The session died under us; publish again on the next one.
                # The event id lets subscribers drop a possible duplicate.
                await asyncio.sleep(0)
            except ApplicationError as exc:
                raise _refused(topic, exc) from exc
            except SerializationError as exc:
                raise PublishRefused(f"cannot encode {topic!r}: {exc}") from exc


def _count_published(started: float) -> None:
    """A publish autobahn carried (not the quick path) was acknowledged."""
    ACK_SECONDS.observe(time.monotonic() - started)
    meters.add(PUBLISHED)


def _complete(future: Acked, error: BaseException | None) -> None:
    """Complete a publish's future, unless its caller cancelled it meanwhile."""
    with contextlib.suppress(InvalidStateError):
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _closed(connection: WampConnection) -> PublishTimeout:
    url = connection.url
    return PublishTimeout(f"the connection to {url} was closed before the publish went out")


def _refused(topic: str, error: BaseException) -> BaseException:
    if isinstance(error, ApplicationError):
        return PublishRefused(f"router refused {topic!r}: {error.error}")
    return error


def _publish_options(
    exclude_authids: list[str] | None = None,
    eligible_authids: list[str] | None = None,
    exclude_sessions: list[int] | None = None,
    retain: bool = False,
) -> PublishOptions:
    return PublishOptions(
        acknowledge=True,
        exclude_authid=[str(a) for a in exclude_authids] if exclude_authids else None,
        eligible_authid=[str(a) for a in eligible_authids] if eligible_authids else None,
        exclude=[int(s) for s in exclude_sessions] if exclude_sessions else None,
        retain=bool(retain) or None,
    )


# Most publishes have no options: one object (and its wire form) serves them all.
_PLAIN = _publish_options()
_PLAIN_DETAILS = _PLAIN.message_attr()

_instance: Publisher | None = None
_instance_lock = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child (a Celery pool process): the parent's session and loop thread
    did not come along, so the child makes a Publisher of its own."""
    global _instance, _instance_lock
    _instance = None
    _instance_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def get_publisher(config: Settings | None = None) -> Publisher:
    """The process's Publisher, created on first use (from `config`, else the environment);
    a forked child never reuses its parent's (asked for per publish: no system call)."""
    global _instance
    instance = _instance
    if instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = Publisher(config).start()
            instance = _instance
    return instance


def publish(topic: str, payload: Any, **options: Any) -> None:
    """Publish through the process's Publisher; see `Publisher.publish`."""
    get_publisher().publish(topic, payload, **options)
