"""The worker's garbage collector, once the worker is ready: start-up's heap frozen, rarer runs."""

from __future__ import annotations

import json
import subprocess
import sys

from workers import heap

# In a process of its own: the collector's state is the whole process's.
_READY_WORKER = """
import gc, json
from celery.signals import worker_ready
from workers import celery_app  # the worker's app, and only it
before = gc.get_threshold()
worker_ready.send(sender=None)
cycle = []
cycle.append(cycle)
del cycle
print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count(), gc.collect()]))
"""


def test_a_ready_worker_freezes_its_heap_and_collects_young_objects_less_often() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _READY_WORKER], capture_output=True, text=True, check=True
    ).stdout
    before, after, frozen, collected = json.loads(out.strip().splitlines()[-1])
    # The older generations keep their ratios; start-up's objects are out of every scan.
    assert after == [heap.YOUNG_THRESHOLD, before[1], before[2]]
    assert frozen > 10_000
    assert collected >= 1  # cycles are still collected
