"""Figures the tests measure on the way (latencies, memory), kept in tests/artifacts/."""

from __future__ import annotations

import json
import statistics
import threading
from pathlib import Path
from typing import Any

FILE = Path(__file__).resolve().parents[1] / "artifacts" / "measurements.json"
_lock = threading.Lock()


def record(name: str, value: Any, **extra: Any) -> None:
    """Keep one figure under `name` (replacing an older one) and print it for `pytest -s`."""
    with _lock:
        FILE.parent.mkdir(parents=True, exist_ok=True)
        try:
            figures = json.loads(FILE.read_text())
        except (FileNotFoundError, ValueError):
            figures = {}
        figures[name] = {"value": value, **extra}
        FILE.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"measured {name}: {value} {extra or ''}")


def summary_ms(samples: list[float]) -> dict[str, float]:
    """Median, 95th percentile and maximum of samples in seconds, in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "samples": len(ordered),
    }
