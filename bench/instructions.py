"""`make bench-instructions`: the worker's instructions per event, counted by callgrind.

CPU seconds per event move with the machine: on two machines of one kind,
and on one machine within minutes, by more than a change to the worker
saves. Instructions do not. This runs the bench's stack with its worker
under `valgrind --tool=callgrind`, instrumentation off until the worker has
taken a warm-up; then, per path, it counts the instructions the worker's
process executes (all its threads) while a fixed number of events goes
through it, and divides. The same code gives the same count within about
5 % (the garbage collector runs when it runs), whatever else the machine is
doing; compare counts from one version of Python and its packages only.

The worker runs about fifty times slower under callgrind, so its queues fill
and it takes full bursts: a count is that of a busy worker, as in `make bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.monitor import Monitor
from bench.stack import Stack
from harness.progress import Progress
from harness.swarm import Swarm
from tidings.settings import Settings

# Path -> what it is; (e), a no-op Celery task, is the baseline of (a).
PATHS = {
    "a'": "tidings, raw JSON domain event",
    "a": "tidings, Celery task",
    "e": "no-op Celery task, same settings",
}
WARMUP = 300
# Events ahead of delivery: the worker's prefetch is filled, as in `make bench`.
WINDOW = 1000
# Seconds a path may take under callgrind before the run is given up.
PATH_TIMEOUT = 900.0


def callgrind(out: Path) -> tuple[str, ...]:
    """The command a worker runs under: instrumentation off until it is asked for."""
    return (
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/callgrind.%p",
    )


def control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def send(bench: scenarios.Bench, path: str, count: int, tick: Callable[[float], None]) -> None:
    """Send `count` events down `path` and wait until all of them arrived."""
    sender = bench.sender(path)
    delivered = bench.delivered(path)
    deadline = time.monotonic() + PATH_TIMEOUT
    sent = 0
    try:
        while (done := delivered()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"({path}): {done} of {count} events in {PATH_TIMEOUT:.0f}s")
            room = min(WINDOW - (sent - done), count - sent, 64)
            if room <= 0:
                time.sleep(0.005)
                continue
            for _ in range(room):
                sender.send(sent)
                sent += 1
            sender.flush()
            tick(done / count)
    finally:
        sender.close()


def total_instructions(dump: Path) -> int:
    """The `totals:` line of a callgrind dump: instructions executed while instrumented."""
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise ValueError(f"{dump} has no totals")


def count(
    bench: scenarios.Bench,
    pid: int,
    out: Path,
    path: str,
    events: int,
    progress: Progress,
    warmup: int = WARMUP,
) -> Path:
    """The callgrind dump of the worker `pid` while `events` went down `path` (after a warm-up)."""
    send(bench, path, warmup, lambda _: None)
    before = set(out.glob(f"callgrind.{pid}.*"))
    control(pid, "--zero")
    control(pid, "--instr=on")
    try:
        send(bench, path, events, progress.update)
    finally:
        control(pid, "--instr=off")
    control(pid, "--dump")
    deadline = time.monotonic() + 60
    while not (dumps := set(out.glob(f"callgrind.{pid}.*")) - before):
        if time.monotonic() > deadline:
            raise TimeoutError("callgrind wrote no dump")
        time.sleep(0.1)
    dump = max(dumps, key=lambda p: int(p.name.rsplit(".", 1)[1]))
    time.sleep(0.5)  # written in one go, but let it finish
    return dump


def run(
    broker_url: str,
    events: int,
    paths: list[str],
    progress: Progress,
    warmup: int = WARMUP,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Start the stack with its worker under callgrind; instructions per event by path
    (with `keep`, each path's dump is copied there, for `callgrind_annotate`)."""
    workdir = Path(tempfile.mkdtemp(prefix="tidings-instructions-"))
    out = workdir / "callgrind"
    out.mkdir()
    results: dict[str, Any] = {"events": events, "per_event": {}}
    try:
        with contextlib.ExitStack() as running:
            progress.step("starting the router and a worker under callgrind", 1)
            stack = running.enter_context(
                Stack(
                    workdir / "stack",
                    broker_url,
                    pool="threads",
                    concurrency=8,
                    loglevel="WARNING",
                    worker_wrapper=callgrind(out),
                )
            )
            stack.scale_workers(1)
            subscriber = Swarm(stack.router.ws_url, stack.secret, 1, scenarios.TOPIC, "sub")
            subscriber.start()
            running.callback(subscriber.close)
            subscriber.wait_joined(60)
            bench = scenarios.Bench(stack, Monitor(), progress, subscriber, 0.0, 0.0)
            pid = stack.worker_pids()[0]
            for path in paths:
                progress.step(f"({path}) {PATHS[path]}: {events} events", 1)
                dump = count(bench, pid, out, path, events, progress, warmup)
                results["per_event"][path] = total_instructions(dump) / events
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(dump, keep / ("callgrind." + path.replace("'", "p")))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    per_event = results["per_event"]
    if "a" in per_event and "e" in per_event:
        results["a/e"] = per_event["a"] / per_event["e"]
    return results


def table(results: dict[str, Any]) -> str:
    lines = [f"worker instructions per event ({results['events']} events per path)"]
    for path, value in results["per_event"].items():
        lines.append(f"({path:2}) {PATHS[path]:34} {value:>10,.0f}")
    if "a/e" in results:
        lines.append(f"instructions (a)/(e) {results['a/e']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("--events", type=int, default=2000, help="events counted per path")
    p.add_argument("--only", default=",".join(PATHS), help="comma-separated paths: a',a,e")
    p.add_argument("--out", default="bench", help="folder for instructions.json")
    p.add_argument("--keep", type=Path, help="copy each path's callgrind dump to this folder")
    args = p.parse_args(argv)
    paths = args.only.split(",")
    unknown = [path for path in paths if path not in PATHS]
    if unknown or not shutil.which("valgrind"):
        print(f"unknown paths {unknown}" if unknown else "valgrind is not installed")
        return 2
    progress = Progress(1 + len(paths))
    broker_url = Settings.from_environ(os.environ).broker_url
    results = run(broker_url, args.events, paths, progress, keep=args.keep)
    progress.finish()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "instructions.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwrote {out / 'instructions.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
