"""CPU and peak memory of the processes under test, per run, sampled with psutil."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

INTERVAL = 0.5
# Seconds between looks for new child processes (workers, clients come and go).
REFRESH = 2.0


@dataclass
class _Tracked:
    roots: Callable[[], list[int]]
    recursive: bool
    procs: dict[int, psutil.Process] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> last seen user+system
    start_cpu: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0
    found_at: float = -math.inf

    def _find(self) -> None:
        # Finding children scans every process on the machine: done seldom, as
        # the scan holds up the load generator that shares this process.
        self.found_at = time.monotonic()
        for root in self.roots():
            if root not in self.procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.procs[root] = psutil.Process(root)
            if self.recursive and root in self.procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    for child in self.procs[root].children(recursive=True):
                        self.procs.setdefault(child.pid, child)

    def sample(self) -> None:
        if time.monotonic() - self.found_at > REFRESH:
            self._find()
        rss = 0
        for pid, proc in list(self.procs.items()):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                del self.procs[pid]
                continue
            self.cpu[pid] = times.user + times.system
            self.start_cpu.setdefault(pid, self.cpu[pid])
        self.peak_rss = max(self.peak_rss, rss)

    def used(self) -> float:
        return sum(self.cpu[pid] - self.start_cpu[pid] for pid in self.cpu)


class Monitor:
    """Samples named process trees; `measure()` gives each one's CPU and peak memory."""

    def __init__(self) -> None:
        self._groups: dict[str, tuple[Callable[[], list[int]], bool]] = {}

    def watch(self, name: str, pids: Callable[[], list[int]], *, recursive: bool = True) -> None:
        """`pids` is asked at every sample: workers and clients come and go.
        `recursive`: with their descendants (a router's workers, a prefork pool)."""
        self._groups[name] = (pids, recursive)

    @contextmanager
    def measure(self) -> Iterator[dict[str, dict[str, float]]]:
        """Yields a dict filled at exit: name -> cpu_percent (100 = one core), cpu_seconds,
        peak_rss_mb."""
        tracked = {name: _Tracked(pids, rec) for name, (pids, rec) in self._groups.items()}
        stop = threading.Event()

        def sample_all() -> None:
            for group in tracked.values():
                group.sample()

        def loop() -> None:
            while not stop.wait(INTERVAL):
                sample_all()

        sample_all()
        started = time.monotonic()
        thread = threading.Thread(target=loop, name="bench-monitor", daemon=True)
        thread.start()
        result: dict[str, dict[str, float]] = {}
        try:
            yield result
        finally:
            stop.set()
            thread.join()
            sample_all()
            wall = max(time.monotonic() - started, 1e-9)
            for name, group in tracked.items():
                result[name] = {
                    "cpu_percent": round(100.0 * group.used() / wall, 1),
                    "cpu_seconds": round(group.used(), 3),
                    "peak_rss_mb": round(group.peak_rss / 2**20, 1),
                }
