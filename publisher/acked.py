"""The future of one publish: done when the router acknowledges it, refuses it, or it is cancelled.

It has the parts of `concurrent.futures.Future` that callers use (result,
exception, add_done_callback, cancel). That class builds a `Condition` per
instance, which at thousands of publishes a second cost a worker more than
the rest of the publish; this one makes an `Event` only for a thread that
actually blocks on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, InvalidStateError

log = logging.getLogger(__name__)

_PENDING, _DONE, _CANCELLED = 0, 1, 2


class Acked:
    """Thread-safe; completed once, by the session's loop (or cancelled by the caller)."""

    __slots__ = ("_callbacks", "_error", "_event", "_lock", "_state")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _PENDING
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Acked], object]] = []
        self._event: threading.Event | None = None

    # -- completing --------------------------------------------------------
    def set_result(self, _: None = None) -> None:
        self._finish(_DONE, None)

    def set_exception(self, error: BaseException) -> None:
        self._finish(_DONE, error)

    def cancel(self) -> bool:
        """Cancel a publish that is still pending; False if it already completed."""
        try:
            self._finish(_CANCELLED, None)
        except InvalidStateError:
            return self._state == _CANCELLED
        return True

    def _finish(self, state: int, error: BaseException | None) -> None:
        with self._lock:
            if self._state != _PENDING:
                raise InvalidStateError("the publish already completed")
            self._error = error  # before the state: readers check the state unlocked
            self._state = state
            callbacks, self._callbacks = self._callbacks, []
            if self._event is not None:
                self._event.set()
        for callback in callbacks:
            self._run(callback)

    def _run(self, callback: Callable[[Acked], object]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("a callback of a publish failed")

    # -- asking ------------------------------------------------------------
    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def add_done_callback(self, callback: Callable[[Acked], object]) -> None:
        """Call `callback(self)` once completed: at once if it already is."""
        with self._lock:
            if self._state == _PENDING:
                self._callbacks.append(callback)
                return
        self._run(callback)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The refusal or failure, None on acknowledgement; waits up to `timeout`."""
        self._wait(timeout)
        if self._state == _CANCELLED:
            raise CancelledError()
        return self._error

    def result(self, timeout: float | None = None) -> None:
        """Return on acknowledgement, raise the error otherwise; waits up to `timeout`."""
        error = self.exception(timeout)
        if error is not None:
            raise error

    def _wait(self, timeout: float | None) -> None:
        if self._state != _PENDING:
            return
        with self._lock:
            if self._state != _PENDING:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not event.wait(timeout):
            raise TimeoutError()
