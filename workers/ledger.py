"""The one ledger: every AMQP message a worker publishes is settled once the router has answered.

Raw events and Celery tasks alike: the consumer opens an entry per message,
in delivery order, publishes without waiting, and the ledger settles the
message when the router has answered for every publish it stands for. The
policy is one for both kinds (`verdict`):

- acknowledged by the router → ack;
- refused (invalid input, or the router said no) → dead letter with the reason, then ack;
- failed for a passing reason (a timeout, a lost transport) → handed back to
  the end of its queue with its count raised; after `max_redeliveries` it is
  dead-lettered with the reason "redelivered N times", never an endless loop.

Acks go out on the consumer's own loop (AMQP channels are not thread-safe),
a run of settled messages with one `multiple` ack on its last, never past a
message the router has not acknowledged, nor past one the consumer never saw
(a gap in the delivery tags) or one Celery's pool still holds (a countdown).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from functools import partial
from typing import Any, Protocol

from kombu.message import Message

from publisher import meters
from tidings.errors import InvalidArgument, InvalidEvent, Refused, detached
from tidings.names import DEAD_INVALID, DEAD_REDELIVERIES, DEAD_REFUSED
from workers.letterbox import LetterBox, TaskCall, redeliveries
from workers.metrics import CONSUMED, REDELIVERED

log = logging.getLogger(__name__)

ACK, DEAD_LETTER, HAND_BACK = "ack", "dead-letter", "hand back"
# Seconds between flushes that run even when none was asked for: the hub drops
# the callbacks queued behind one that raised, and a lost flush must not leave
# every later ack waiting.
SAFETY_FLUSH = 1.0


class _Process:
    """This process's id, kept current across forks: asked for once per message."""

    pid = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()


_process = _Process
os.register_at_fork(after_in_child=_process.forked)


class Completes(Protocol):
    """What a publish's future offers the ledger (publisher.acked.Acked)."""

    def add_done_callback(self, callback: Callable[[Any], object]) -> None: ...

    def cancelled(self) -> bool: ...

    def exception(self, timeout: float | None = None) -> BaseException | None: ...


def verdict(error: BaseException | None, redelivered: int, limit: int) -> tuple[str, str]:
    """What to do with a message whose publishes ended with `error` (None: all acknowledged)."""
    if error is None:
        return ACK, ""
    reason = describe(error)
    if isinstance(error, Refused):
        return DEAD_LETTER, reason
    if redelivered >= limit:
        return DEAD_LETTER, f"redelivered {redelivered} times; last: {reason}"
    return HAND_BACK, reason


def describe(error: BaseException) -> str:
    if isinstance(error, Refused):
        return str(error)
    return f"{type(error).__name__}: {error}"


class Entry:
    """One delivered message, waiting for the router to answer for its publishes."""

    __slots__ = (
        "alone",
        "done",
        "error",
        "foreign",
        "held",
        "message",
        "queue",
        "remaining",
        "task",
        "task_id",
    )

    def __init__(self, message: Message, queue: str, task: TaskCall | None, foreign: bool) -> None:
        self.message = message
        self.queue = queue
        self.task = task
        self.remaining = 0
        self.error: BaseException | None = None
        self.done = False
        # Settled by Celery's own path (the pool), not by the ledger.
        self.foreign = foreign
        # Moved out of its line while Celery holds it, so that it blocks no one.
        self.held = False
        # Acked on its own, never by a `multiple` ack (its channel skipped tags).
        self.alone = False
        # The task id of a message Celery holds (`foreign`), for `adopt`.
        self.task_id: str | None = None


class _Line:
    """The entries of one channel, in delivery order."""

    __slots__ = ("entries", "gapped", "held", "last_tag")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.last_tag = 0
        self.gapped = False
        self.held = 0  # foreign entries moved out while still unsettled


class Ledger:
    """Settles messages after the router's answers, on the consumer's loop (module docstring)."""

    def __init__(self, letters: LetterBox | None = None, max_redeliveries: int = 10) -> None:
        self.letters = letters
        self.max_redeliveries = max_redeliveries
        self._lines: dict[Any, _Line] = {}
        self._foreign: dict[int, Entry] = {}
        # Celery tasks the pool is running, by task id: the ledger may adopt them
        # (a list: two messages may carry one task id).
        self._tasks: dict[str, list[Entry]] = {}
        # Task ids whose messages the ledger took over, with how many of each.
        self._adopted: Counter[str] = Counter()
        # Held entries that were adopted and are now settled: outside any line.
        self._loose: list[Entry] = []
        self._lock = threading.Lock()
        self._flush_due = False
        self._hub: Any = None
        self._pid: int | None = None
        self.settled = {ACK: 0, DEAD_LETTER: 0, HAND_BACK: 0}

    # -- set-up, on the consumer's loop --------------------------------------
    def use_hub(self, hub: Any) -> None:
        """The consumer's event loop, told at every consumer (re)start.

        Kept here because kombu forgets its current loop when Celery resets the
        hub after a broker reconnect, though the same hub goes on running.
        """
        if hub is None:
            return
        if hub is not self._hub:
            hub.call_repeatedly(SAFETY_FLUSH, self.flush)
        self._hub = hub
        self._pid = _process.pid
        self.restart()

    def ready(self) -> bool:
        """Whether messages can be settled here: only in the consumer's process (a prefork
        child cannot reach the parent's channel) once its loop is known."""
        return self._hub is not None and _process.pid == self._pid

    def restart(self) -> None:
        """After a consumer restart: forget channels that closed (RabbitMQ hands their
        messages out again) and flush, as a flush queued before may have been dropped."""
        with self._lock:
            self._flush_due = False
            for channel in [c for c in self._lines if not _is_open(c)]:
                del self._lines[channel]
            self._foreign = {k: e for k, e in self._foreign.items() if _is_open(e.message.channel)}
            tasks = {
                k: [e for e in es if _is_open(e.message.channel)] for k, es in self._tasks.items()
            }
            self._tasks = {k: es for k, es in tasks.items() if es}
        if self._hub is not None:
            self._hub.call_soon(self.flush)

    # -- opening entries, on the consumer's loop, in delivery order ----------
    def open(self, message: Message, queue: str, task: TaskCall | None = None) -> Entry:
        """A message the consumer publishes itself; settle it with `expect` or `fail`."""
        return self._append(Entry(message, queue, task, foreign=False))

    def foreign(self, message: Message, queue: str, task_id: str | None = None) -> Entry:
        """A message Celery's pool handles: its place in line, settled by `settle_foreign`
        (or, if its task publishes through `adopt`, by the ledger)."""
        entry = self._append(Entry(message, queue, None, foreign=True))
        with self._lock:
            self._foreign[id(message)] = entry
            if task_id:
                entry.task_id = task_id
                self._tasks.setdefault(task_id, []).append(entry)
        return entry

    def _append(self, entry: Entry) -> Entry:
        message = entry.message
        line = self._lines.get(message.channel)
        if line is None:
            line = self._lines[message.channel] = _Line()
        tag = int(message.delivery_tag)
        if tag != line.last_tag + 1 and not line.gapped:
            # A `multiple` ack would also ack the deliveries this consumer never
            # saw (after a connection restart the client can lose a run of
            # them): from now on this channel's messages are acked one by one,
            # so that what was skipped is redelivered instead.
            line.gapped = True
            log.warning(
                "deliveries %d to %d on a channel never reached the ledger; "
                "acking one by one on that channel",
                line.last_tag + 1,
                tag - 1,
            )
        line.last_tag = max(line.last_tag, tag)
        entry.alone = line.gapped
        line.entries.append(entry)
        consumed = CONSUMED.get(entry.queue)
        if consumed is not None:
            meters.add(consumed)
            if _taken_again(message):
                meters.add(REDELIVERED)
        return entry

    # -- completing entries, from any thread ---------------------------------
    def expect(self, entry: Entry, futures: Iterable[Completes]) -> None:
        """Settle `entry` once every one of these publishes has been answered."""
        futures = list(futures)
        # Not yet seen by any other thread: its futures' callbacks come after this.
        entry.foreign = False
        entry.remaining = len(futures)
        if not futures:
            self._complete(entry, None)
            return
        for future in futures:
            future.add_done_callback(partial(self._published, entry))

    def fail(self, entry: Entry, error: BaseException) -> None:
        """Settle `entry` with this error (its input was refused before any publish)."""
        with self._lock:
            entry.foreign = False
            entry.remaining = 0
        # Neither the error nor the message may keep a traceback: its frames hold
        # the message, a cycle that would keep its body until a rare collection.
        if getattr(entry.message, "errors", None):
            entry.message.errors = []  # type: ignore[assignment]  # kombu: why a body was undecodable
        self._complete(entry, detached(error))

    def adopt(self, task: TaskCall, futures: Iterable[Completes]) -> bool:
        """Take over a message Celery's pool is running (a countdown, a chain) once its task
        has published: the ledger, not Celery, settles it. False if it is not in the ledger,
        or if several messages Celery holds carry this task id (which one is running?)."""
        with self._lock:
            entries = self._tasks.get(task.id)
            if not entries or len(entries) > 1:
                return False
            entry = entries[0]
            if self._foreign.pop(id(entry.message), None) is None:
                return False
            self._forget_task(entry)
            self._adopted[task.id] += 1
        entry.task = task
        with self._lock:
            entry.foreign = False
        self.expect(entry, futures)
        return True

    def adopted(self, task_id: str) -> bool:
        """Whether the ledger took this task's message over (then Celery must not ack it)."""
        with self._lock:
            if self._adopted[task_id] > 0:
                self._adopted[task_id] -= 1
                if not self._adopted[task_id]:
                    del self._adopted[task_id]
                return True
            return False

    def _forget_task(self, entry: Entry) -> None:
        """Under the lock: `entry` is no longer Celery's to run."""
        task_id = entry.task_id
        entries = self._tasks.get(task_id) if task_id else None
        if task_id and entries is not None and entry in entries:
            entries.remove(entry)
            if not entries:
                del self._tasks[task_id]

    def settle_foreign(self, message: Message, settle: Callable[..., Any], *args: Any) -> None:
        """Celery's ack or reject of a message it handled (`settle(*args)`), run on the
        consumer's loop; once it went out, the message's place in line is free."""

        def run() -> None:
            try:
                settle(*args)
            finally:
                self._foreign_settled(message)

        if self._hub is None:
            run()
        else:
            self._hub.call_soon(run)

    def refuse(self, message: Message, error: BaseException) -> bool:
        """A message handed to Celery's path that it refused before running it (an invalid
        task, a body it cannot decode): dead-lettered with `error` in its turn, not dropped.
        False if the ledger holds no such message for Celery."""
        with self._lock:
            entry = self._foreign.pop(id(message), None)
            if entry is None:
                return False
            self._forget_task(entry)
        self.fail(entry, error)
        return True

    def _foreign_settled(self, message: Message) -> None:
        with self._lock:
            entry = self._foreign.pop(id(message), None)
            if entry is None:
                return
            self._forget_task(entry)
            entry.done = True
            if entry.held:
                line = self._lines.get(message.channel)
                if line is not None:
                    line.held -= 1
        self.flush()

    def _published(self, entry: Entry, future: Completes) -> None:
        # On the Publisher's thread, once per publish: one lock, and a flush
        # asked for only if none is due yet.
        error = _error_of(future)
        if error is not None:
            error = detached(error)  # its traceback's frames may hold the payload
        with self._lock:
            entry.remaining -= 1
            if error is not None and entry.error is None:
                entry.error = error
            if entry.remaining > 0 or not self._done(entry):
                return
        self._schedule_flush()

    def _complete(self, entry: Entry, error: BaseException | None) -> None:
        with self._lock:
            if error is not None and entry.error is None:
                entry.error = error
            if not self._done(entry):
                return
        self._schedule_flush()

    def _done(self, entry: Entry) -> bool:
        """Under the lock: mark it done; whether a flush must be asked for."""
        entry.done = True
        if entry.held:
            self._loose.append(entry)
        if self._flush_due:
            return False  # the flush already scheduled will take this one too
        self._flush_due = True
        return True

    def _schedule_flush(self) -> None:
        hub = self._hub
        if hub is None:
            self.flush()  # no loop (a test, an unusual pool): settle at once
        else:
            hub.call_soon(self.flush)

    # -- settling, on the consumer's loop ------------------------------------
    def flush(self) -> None:
        """Settle what is settled at the head of each line (see the module docstring)."""
        with self._lock:
            self._flush_due = False
            lines = list(self._lines.values())
            loose, self._loose = self._loose, []
        for entry in loose:
            self._settle_loose(entry)
        for line in lines:
            try:
                self._flush_line(line)
            except Exception:
                log.exception("settling messages failed; they will be redelivered")

    def _flush_line(self, line: _Line) -> None:
        run: Entry | None = None  # the last of a run of good messages, acked together
        for entry, batchable in self._settled_head(line):
            if entry.foreign:
                continue  # Celery settled it on the wire already
            if batchable and entry.error is None:
                run = entry
                continue
            if run is not None:
                self._ack(run, multiple=True)
                run = None
            self._settle(entry)
        if run is not None:
            self._ack(run, multiple=True)

    def _settled_head(self, line: _Line) -> list[tuple[Entry, bool]]:
        """Take the settled entries off the head of the line, each with whether a `multiple`
        ack may cover it: not after a gap, nor while an earlier one is still held."""
        with self._lock:
            ready: list[tuple[Entry, bool]] = []
            while line.entries:
                head = line.entries[0]
                if not head.done:
                    if not head.foreign:
                        break
                    # Celery holds it (a countdown may hold it for hours): step
                    # round it, and ack one by one until it is settled.
                    head.held = True
                    line.held += 1
                line.entries.popleft()
                if head.done:
                    ready.append((head, not head.alone and line.held == 0))
            return ready

    def _settle_loose(self, entry: Entry) -> None:
        """An entry stepped round while Celery held it, adopted since: settled on its own."""
        try:
            self._settle(entry)
        except Exception:
            log.exception("settling %s failed; it will be redelivered", _what(entry))
        with self._lock:
            line = self._lines.get(entry.message.channel)
            if line is not None:
                line.held -= 1

    def _settle(self, entry: Entry) -> None:
        action, reason = verdict(entry.error, redeliveries(entry.message), self.max_redeliveries)
        if action == ACK:
            self._ack(entry)
            return
        try:
            assert self.letters is not None, "a ledger that settles failures needs a LetterBox"
            if action == DEAD_LETTER:
                code = dead_letter_code(entry.error)
                self.letters.dead_letter(entry.message, reason, entry.task, code)
            else:
                log.warning("%s failed (%s); handed back to %s", _what(entry), reason, entry.queue)
                self.letters.hand_back(entry.message, entry.queue, redeliveries(entry.message) + 1)
        except Exception:
            # The broker is in trouble: give the message back as it is rather than lose it.
            log.warning("could not %s %s; requeued", action, _what(entry), exc_info=True)
            self._requeue(entry)
            return
        self.settled[action] += 1
        self._ack(entry, count=False)

    def _ack(self, entry: Entry, multiple: bool = False, count: bool = True) -> None:
        try:
            entry.message.ack(multiple=multiple)
        except Exception:
            # The channel died since delivery; RabbitMQ redelivers the messages.
            log.warning("could not ack %s; it will be redelivered", _what(entry), exc_info=True)
            return
        if count:
            self.settled[ACK] += 1

    def _requeue(self, entry: Entry) -> None:
        try:
            entry.message.reject(requeue=True)
        except Exception:
            log.debug("could not requeue %s either", _what(entry), exc_info=True)

    def __len__(self) -> int:
        """Messages in line (not counting those Celery holds)."""
        with self._lock:
            return sum(len(line.entries) for line in self._lines.values())


def _taken_again(message: Message) -> bool:
    """Delivered before: after a crash or a lost connection, handed back, or a task retried."""
    if message.delivery_info.get("redelivered"):
        return True
    headers = message.headers or {}
    return redeliveries(message) > 0 or bool(headers.get("retries"))


def dead_letter_code(error: BaseException | None) -> str:
    """The word for why a message is dead-lettered (tidings.names.DEAD_LETTER_CODES)."""
    if isinstance(error, InvalidEvent | InvalidArgument):
        return DEAD_INVALID
    if isinstance(error, Refused):
        return DEAD_REFUSED
    return DEAD_REDELIVERIES


def _error_of(future: Completes) -> BaseException | None:
    if future.cancelled():
        return CancelledError("the publish was cancelled")  # handed back, not lost
    try:
        return future.exception()
    except Exception as exc:
        return exc


def _is_open(channel: Any) -> bool:
    return bool(getattr(channel, "is_open", True))


def _what(entry: Entry) -> str:
    if entry.task is not None:
        return f"task {entry.task.name} {entry.task.id}"
    return f"message from {entry.queue}"
