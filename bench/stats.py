"""Numbers from arrival records: rates in a window, latency percentiles, ratios against targets."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Per event number: [sent at, sessions that got it, first arrival, last arrival] (epoch seconds).
Arrivals = Mapping[int, Sequence[float]]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rate_in_window(arrivals: Arrivals, start: float, end: float) -> float:
    """Events per second whose first arrival falls in [start, end)."""
    if end <= start:
        raise ValueError("the window must have a positive length")
    inside = sum(1 for record in arrivals.values() if start <= record[2] < end)
    return inside / (end - start)


def rate_from_samples(samples: Sequence[tuple[float, int]], start: float, end: float) -> float:
    """Events per second between the first sample at or after `start` and the last one
    at or before `end`; samples are (time, delivered so far)."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return math.nan
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0)


def latencies_ms(
    arrivals: Arrivals, *, sent_after: float = 0.0, until_last: bool = False
) -> list[float]:
    """Enqueue-to-arrival times in ms, for events sent after `sent_after`.

    `until_last`: time until the last session had it (fan-out), else the first.
    """
    column = 3 if until_last else 2
    return [
        (record[column] - record[0]) * 1000.0
        for record in arrivals.values()
        if record[0] >= sent_after
    ]


def summary_ms(values: Sequence[float], points: Iterable[float] = (50, 95, 99)) -> dict[str, Any]:
    """p50/p95/p99 and max of latencies, rounded for people, with the sample count."""
    result: dict[str, Any] = {f"p{p:g}": round(percentile(values, p), 2) for p in points}
    result["max"] = round(max(values), 2) if values else math.nan
    result["samples"] = len(values)
    return result


def incomplete(arrivals: Arrivals, expected_sessions: int) -> int:
    """Events that did not reach every session (or arrived more than once somewhere)."""
    return sum(1 for record in arrivals.values() if int(record[1]) != expected_sessions)


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator


def check(value: float, target: float, *, at_most: bool = False) -> bool:
    """Whether `value` meets `target` (at least, or at most); NaN never does."""
    if math.isnan(value):
        return False
    return value <= target if at_most else value >= target
