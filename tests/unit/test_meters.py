"""The process meters: exact counts from many threads, a prefork child's counts summed by its
parent, gauges of exited processes left out, and a switch that turns counting off."""

from __future__ import annotations

import os
import threading

import pytest

from publisher import meters

COUNTED = meters.slot("test_counted_total")
HELD = meters.slot("test_held", gauge=True)
LATENCY = meters.Histogram("test_latency_seconds", (0.001, 0.01, 0.1))


def test_increments_from_many_threads_are_all_counted():
    before = meters.value("test_counted_total")
    start = threading.Barrier(8)

    def count() -> None:
        start.wait()
        for _ in range(20_000):
            meters.add(COUNTED)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert meters.value("test_counted_total") - before == 160_000


def test_a_histogram_counts_each_observation_in_its_bucket():
    before = meters.totals()
    for seconds in (0.0005, 0.002, 0.05, 0.05, 3.0):
        LATENCY.observe(seconds)
    after = meters.totals()
    buckets, total = LATENCY.read([a - b for a, b in zip(after, before, strict=True)])
    assert buckets == [("0.001", 1), ("0.01", 2), ("0.1", 4), ("+Inf", 5)]
    assert total == pytest.approx(3.1025, abs=1e-5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_counts_into_a_file_its_parent_sums(tmp_path, monkeypatch):
    monkeypatch.setenv(meters.DIR_VARIABLE, str(tmp_path))
    meters.add(COUNTED, 5)  # the parent, before the fork
    meters.add(HELD, 1)
    parent = meters.totals()[COUNTED]
    pid = os.fork()
    if pid == 0:  # the child: counts into its own file, then exits
        meters.add(COUNTED, 7)
        meters.add(HELD, 1)
        os._exit(0)
    os.waitpid(pid, 0)
    totals = meters.totals()
    assert totals[COUNTED] == parent + 7  # an exited child's counts stay
    assert totals[HELD] == 1  # its gauge does not
    assert any(path.name.startswith(f"{pid}-") for path in tmp_path.glob("*.meters"))


def test_switched_off_nothing_is_counted():
    script = (
        "from publisher import meters\n"
        "s = meters.slot('x_total'); h = meters.Histogram('h', (1.0,))\n"
        "meters.switch_off(); meters.add(s); h.observe(0.5)\n"
        "assert meters.totals() == [0] * meters.SLOTS\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
