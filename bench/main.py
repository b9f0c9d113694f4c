"""Runs the whole bench: starts the processes, runs each scenario, prints and writes results."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench import report, scenarios
from bench.monitor import Monitor
from bench.stack import Stack
from harness.progress import Progress
from harness.redis_server import RedisServer, redis_server
from harness.swarm import Swarm

# Paths whose ratios are targets run in rounds, each path once per round, one
# after the other: a ratio pairs runs minutes apart at most, and the median
# over rounds shrugs off a round disturbed by other work on the machine.
ROUNDS = ("d", "a'", "a", "e", "a's", "a'0", "a0")
# Paths run on a stack of their own: shared mode, and metrics off.
SHARED, UNMETERED = ("a's",), ("a'0", "a0")
THROUGHPUT = ("b", "c", "a2")
LATENCY = ("d", "a'", "a", "b", "c")


@dataclass
class Options:
    broker_url: str
    out: Path
    seconds: float = 10.0
    warmup: float = 2.0
    rate: float = 200.0
    rounds: int = 3
    fanout: tuple[int, ...] = (1, 100, 1000)
    fanout_events: int = 40
    chat_rate: float = 50.0
    chat_members: int = 100
    sessions: int = 5000
    client_processes: int = 4
    hold: float = 12.0
    pool: str = "threads"
    concurrency: int = 8
    loglevel: str = "WARNING"
    only: set[str] = field(default_factory=set)
    keep: bool = False

    def wants(self, key: str) -> bool:
        return not self.only or key in self.only


def _raise_open_files(wanted: int) -> int:
    """Thousands of sessions need as many descriptors, in the router and the clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _broker_pids(url: str) -> list[int]:
    """The process listening on the broker's port, if it is on this machine and visible."""
    port = urlsplit(url).port or 5672
    try:
        found = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        }
    except psutil.AccessDenied:
        return []
    return sorted(found)


def _machine() -> dict[str, Any]:
    cores = os.cpu_count() or 0
    memory = psutil.virtual_memory().total / 2**30
    return {
        "cores": cores,
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "summary": f"{cores} cores, {memory:.0f} GiB, Python {platform.python_version()}",
    }


Step = tuple[str, float, Callable[[scenarios.Bench], Any]]


def plan(options: Options) -> list[Step]:
    """(result name, expected seconds, run) for every scenario the options ask for."""
    steps: list[Step] = []
    per_run = options.warmup + options.seconds + 1
    for round_ in range(options.rounds):
        for key in ROUNDS:
            if options.wants(key):
                run = partial(scenarios.throughput, path=key)
                steps.append((f"throughput/{key}/{round_ + 1}", per_run, run))
    for key in THROUGHPUT:
        if options.wants(key):
            cost = per_run + (8 if key == "a2" else 0) + (4 if key == "c" else 0)
            steps.append((f"throughput/{key}", cost, partial(scenarios.throughput, path=key)))
    for key in LATENCY:
        if options.wants(f"lat-{key}"):
            run = partial(scenarios.latency, path=key, rate=options.rate)
            steps.append((f"latency/{key}", per_run, run))
    if options.wants("fanout"):
        for size in options.fanout:
            # One event at a time on the wire: each is timed alone, not queued
            # behind the copies of the one before.
            rate = 10.0 if size <= 100 else 2.0
            events = options.fanout_events if size <= 100 else options.fanout_events * 3 // 4
            run = partial(scenarios.fanout, size=size, events=events, rate=rate)
            steps.append((f"fanout/{size}", 4 + size / 150 + events / rate, run))
    if options.wants("chat"):
        per_chat = options.warmup + options.seconds + 6
        # Round trip to the other member at a browser's pace, then one busy room.
        run = partial(scenarios.chat, members=1, rate=options.chat_rate)
        steps.append(("chat/latency", per_chat, run))
        run = partial(scenarios.chat, members=options.chat_members, rate=None)
        steps.append(("chat/room", per_chat + 4, run))
    if options.wants("connections"):
        run = partial(
            scenarios.connections,
            total=options.sessions,
            processes=options.client_processes,
            hold=options.hold,
        )
        steps.append(("connections", options.hold + options.sessions / 150, run))
    return steps


def run(options: Options) -> dict[str, Any]:
    """Run the bench; returns the results (also written to options.out)."""
    _raise_open_files(max(4 * options.sessions, 16384))
    steps = plan(options)
    progress = Progress(15 + sum(cost for _, cost, _ in steps))
    results: dict[str, Any] = {
        "machine": _machine(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {
            k: sorted(v) if isinstance(v, set) else v
            for k, v in asdict(options).items()
            if k not in ("broker_url", "out")
        },
    }
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-"))
    progress.step("starting the router, a worker and the subscriber", 15)
    with contextlib.ExitStack() as running:
        bench = _start(running, workdir / "memory", options, progress, None)
        stacks = {key: bench for key in ROUNDS}
        wanted = {name.split("/")[1] for name, _, _ in steps if name.count("/") == 2}
        if wanted & set(SHARED):
            # Shared mode beside it, so that its rounds alternate with the others'.
            redis = running.enter_context(redis_server())
            shared = _start(running, workdir / "shared", options, progress, redis)
            stacks.update(dict.fromkeys(SHARED, shared))
        if wanted & set(UNMETERED):
            unmetered = _start(running, workdir / "unmetered", options, progress, None, False)
            stacks.update(dict.fromkeys(UNMETERED, unmetered))
        for name, cost, step in steps:
            progress.step(name, cost)
            section, _, key = name.partition("/")
            result = step(stacks.get(key.partition("/")[0], bench))
            if "/" in key:
                key = key.partition("/")[0]
                results.setdefault("rounds", {}).setdefault(key, []).append(result)
            elif key:
                results.setdefault(section, {})[key] = result
            else:
                results[section] = result
    results["duration_s"] = round(time.monotonic() - began, 1)
    for key, runs in results.get("rounds", {}).items():
        results.setdefault("throughput", {})[key] = report.median_run(runs)
    results["targets"] = report.judge(results)
    progress.finish()
    options.out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, options.out / "results.json")
    report.plot(results, options.out / "results.png")
    if not options.keep:
        _remove(workdir)
    results["workdir"] = str(workdir)
    return results


def _start(
    running: contextlib.ExitStack,
    workdir: Path,
    options: Options,
    progress: Progress,
    redis: RedisServer | None,
    metrics: bool = True,
) -> scenarios.Bench:
    """A stack (router, worker, vhost) with its receiving subscriber and its meters."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = running.enter_context(
        Stack(
            workdir,
            options.broker_url,
            pool=options.pool,
            concurrency=options.concurrency,
            loglevel=options.loglevel,
            redis_url=redis.url if redis else None,
            metrics=metrics,
        )
    )
    stack.scale_workers(1)
    subscriber = Swarm(stack.router.ws_url, stack.secret, 1, scenarios.TOPIC, "sub").start()
    running.callback(subscriber.close)
    subscriber.wait_joined(60)
    monitor = Monitor()
    bench = scenarios.Bench(stack, monitor, progress, subscriber, options.seconds, options.warmup)
    monitor.watch("router", lambda: [stack.router.pid])
    monitor.watch("worker", stack.worker_pids)
    broker = _broker_pids(options.broker_url)
    monitor.watch("rabbitmq", lambda: broker, recursive=False)
    if redis is not None and redis.proc is not None:
        redis_pid = redis.proc.pid
        monitor.watch("redis", lambda: [redis_pid], recursive=False)
    monitor.watch("clients", bench.client_pids)
    # The load generator itself; its children are the processes above.
    monitor.watch("bench", lambda: [os.getpid()], recursive=False)
    return bench


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
