"""The worker's garbage collector: start-up's objects left out of its scans, run less often.

Each event allocates some fifty objects the collector tracks, and a
thousand events may be in flight at once (the prefetch). With Python's
default thresholds the collector ran every 700 allocations and, every so
often, scanned every object the imports of Celery, kombu and autobahn had
left on the heap: a ninth of the worker's instructions per raw event
(callgrind; docs/performance.md). Freezing the heap once the worker is ready
takes those objects out of every later scan; a higher first threshold makes
young collections rarer. Reference counting still frees nearly everything
at once; the collector is only for cycles.
"""

from __future__ import annotations

import gc
from typing import Any

from celery.signals import worker_ready

# Allocations between young collections (Python's default: 700); the older
# generations keep Python's ratios.
YOUNG_THRESHOLD = 50_000


@worker_ready.connect
def settle(**_: Any) -> None:
    """Once the worker is ready: collect what start-up left, freeze the rest, collect less often."""
    gc.collect()
    gc.freeze()
    middle, old = gc.get_threshold()[1:]
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
