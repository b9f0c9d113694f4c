"""What a process counts for Prometheus: integers in slots, one array per thread, summed when read.

An increment is one index add on an array that only its own thread writes:
no lock, nothing lost between threads, a fraction of a microsecond on the
path of every event. Reading (a scrape) sums the arrays of every thread.

With `TIDINGS_METRICS_DIR` set (a prefork worker, whose parent serves the
metrics of its children), each array is a file there, mapped into memory;
the reader sums the files of every process. Counters keep what a process
that exited had counted; gauges count only processes still running.
"""

from __future__ import annotations

import bisect
import mmap
import os
import threading
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

SLOTS = 64
DIR_VARIABLE = "TIDINGS_METRICS_DIR"

_names: dict[str, int] = {}
_gauges: set[int] = set()
_lock = threading.Lock()
_local = threading.local()
_arrays: list[Any] = []  # this process's, one per thread that counted
_files: list[mmap.mmap] = []


def slot(name: str, gauge: bool = False) -> int:
    """The index of the counter (or gauge) `name`; the same for every process."""
    with _lock:
        index = _names.get(name)
        if index is None:
            index = _names[name] = len(_names)
            if index >= SLOTS:
                raise RuntimeError(f"more than {SLOTS} meters")
        if gauge:
            _gauges.add(index)
        return index


def add(index: int, amount: int = 1) -> None:
    """Add to a counter, or move a gauge, from any thread."""
    try:
        values = _local.values
    except AttributeError:
        values = _new_array()
    values[index] += amount


class Histogram:
    """Observations counted in buckets (upper bounds in seconds), with their count and sum."""

    def __init__(self, name: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.bounds = list(bounds)
        self.buckets = [slot(f"{name}:le:{bound!r}") for bound in self.bounds]
        self.overflow = slot(f"{name}:le:+Inf")
        self.count = slot(f"{name}:count")
        self.sum_us = slot(f"{name}:sum_us")

    def observe(self, seconds: float) -> None:
        try:
            values = _local.values
        except AttributeError:
            values = _new_array()
        at = bisect.bisect_left(self.bounds, seconds)
        values[self.buckets[at] if at < len(self.buckets) else self.overflow] += 1
        values[self.count] += 1
        values[self.sum_us] += int(seconds * 1_000_000)

    def read(self, totals: Sequence[int]) -> tuple[list[tuple[str, int]], float]:
        """Cumulative buckets as Prometheus has them ([(le, count)]) and the sum in seconds."""
        running = 0
        cumulative = []
        for bound, index in zip(self.bounds, self.buckets, strict=True):
            running += totals[index]
            cumulative.append((_le(bound), running))
        cumulative.append(("+Inf", running + totals[self.overflow]))
        return cumulative, totals[self.sum_us] / 1_000_000


def switch_off() -> None:
    """Count nothing from now on (no endpoint reads them): every add and observe a no-op."""
    global add
    add = _nothing  # type: ignore[assignment]  # callers look `meters.add` up at each call
    Histogram.observe = _nothing  # type: ignore[assignment,method-assign]


def _nothing(*_: Any) -> None:
    pass


def totals() -> list[int]:
    """Every slot summed over this process's threads, and with a directory over its processes."""
    summed = [0] * SLOTS
    directory = os.environ.get(DIR_VARIABLE)
    if not directory:
        for values in list(_arrays):
            for index in range(SLOTS):
                summed[index] += values[index]
        return summed
    for pid, values in _read_directory(Path(directory)):
        alive = _alive(pid)
        for index in range(SLOTS):
            if alive or index not in _gauges:
                summed[index] += values[index]
    # Arrays this process made before the directory was set are in memory only.
    for values in list(_arrays):
        if isinstance(values, array):
            for index in range(SLOTS):
                summed[index] += values[index]
    return summed


def value(name: str) -> int:
    """One slot's total (for tests and `tidings status`)."""
    return totals()[_names[name]]


def _new_array() -> Any:
    directory = os.environ.get(DIR_VARIABLE)
    with _lock:
        if directory:
            path = Path(directory) / f"{os.getpid()}-{threading.get_ident()}.meters"
            with open(path, "w+b") as out:
                out.truncate(SLOTS * 8)
                mapped = mmap.mmap(out.fileno(), SLOTS * 8)
            _files.append(mapped)
            values: Any = memoryview(mapped).cast("q")
        else:
            values = array("q", bytes(SLOTS * 8))
        _arrays.append(values)
    _local.values = values
    return values


def _read_directory(directory: Path) -> Iterator[tuple[int, Any]]:
    for path in directory.glob("*.meters"):
        try:
            data = path.read_bytes()
        except OSError:
            continue  # removed meanwhile
        if len(data) == SLOTS * 8:
            yield int(path.name.split("-", 1)[0]), memoryview(data).cast("q")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget_after_fork() -> None:
    # A forked child starts with copies of its parent's arrays (and of the
    # files' mappings): it counts into arrays of its own.
    global _local, _lock
    _local = threading.local()
    _lock = threading.Lock()
    _arrays.clear()
    _files.clear()


def _le(bound: float) -> str:
    return repr(float(bound))


os.register_at_fork(after_in_child=_forget_after_fork)
