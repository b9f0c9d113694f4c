"""A one-line progress bar on stderr, weighted by each step's expected seconds."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    """`step(label, weight)` begins a step; `update(fraction)` moves within it.

    On a terminal the bar redraws in place; elsewhere (CI logs) each step is
    one line, so logs stay readable.
    """

    def __init__(self, total: float, stream: TextIO | None = None) -> None:
        self.total = max(total, 1e-9)
        self.stream = stream or sys.stderr
        self.done = 0.0
        self.weight = 0.0
        self.label = ""
        self.fraction = 0.0
        self.started = time.monotonic()
        self.tty = self.stream.isatty()

    def step(self, label: str, weight: float) -> None:
        self.done += self.weight
        self.weight = weight
        self.label = label
        self.fraction = 0.0
        if self.tty:
            self._draw()
        else:
            print(f"[{self.percent():3.0f}%] {label}", file=self.stream, flush=True)

    def update(self, fraction: float) -> None:
        self.fraction = min(max(fraction, 0.0), 1.0)
        if self.tty:
            self._draw()

    def percent(self) -> float:
        return min(100.0, 100.0 * (self.done + self.weight * self.fraction) / self.total)

    def finish(self) -> None:
        self.done, self.weight, self.fraction = self.total, 0.0, 0.0
        if self.tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        filled = int(WIDTH * self.percent() / 100)
        elapsed = time.monotonic() - self.started
        line = f"\r[{'#' * filled}{'.' * (WIDTH - filled)}] {self.percent():3.0f}% "
        line += f"{elapsed:5.0f}s  {self.label}"
        self.stream.write(line[:120].ljust(100))
        self.stream.flush()
