"""Resident memory of a process tree (a router with its worker process, a Celery worker)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import psutil

MiB = 1024 * 1024


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants that are still there."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants, in bytes (0 if it is gone)."""
    total = 0
    for process in tree(pid):
        # A child that just exited holds no memory.
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def tree_connections(pid: int) -> list[psutil._common.pconn]:
    """The TCP connections held by a process tree."""
    found = []
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            found.extend(process.net_connections(kind="tcp"))
    return found


class MemorySampler:
    """Samples the RSS of a process tree every `interval` seconds on a thread.

    `pid` is a callable because a restarted router has a new pid.
    """

    def __init__(self, pid: Callable[[], int | None], interval: float = 0.5) -> None:
        self._pid = pid
        self._interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            pid = self._pid()
            rss = tree_rss(pid) if pid else 0
            if rss:
                self.samples.append((time.monotonic() - self._started, rss))
            self._stop.wait(self._interval)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        values = [rss for t, rss in self.samples if since <= t <= until]
        return max(values, default=0)

    def now(self) -> float:
        return time.monotonic() - self._started
