"""Runs the whole bench: starts the processes, runs each scenario, prints and writes results."""

from __future__ import annotations

import contextlib
import math
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

from bench import nodes, report, scenarios
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
# Sections run on two shared-mode nodes (bench/nodes.py), after the others; the
# restart last, as it replaces node a's router.
PAIR_SECTIONS = ("sessions", "nodes", "restart")
# Expected seconds to start the pair, and the main stack.
PAIR_START, MAIN_START = 12.0, 15.0


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
    # Two shared-mode nodes: subscribers per node in `nodes` (events to them);
    # recovering clients and the event rate in `restart` (seconds of the stream before
    # the router stops and after it is back); idle sessions on one node, then over two.
    node_subscribers: int = 1000
    node_events: int = 30
    restart_clients: int = 200
    restart_rate: float = 200.0
    restart_before: float = 3.0
    restart_after: float = 4.0
    node_sessions: tuple[int, int] = (10000, 20000)
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


# The run gets a scenarios.Bench, or for PAIR_SECTIONS a nodes.Pair.
Step = tuple[str, float, Callable[[Any], Any]]


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
    steps += _pair_plan(options)
    return steps


def _pair_plan(options: Options) -> list[Step]:
    steps: list[Step] = []
    if options.wants("sessions"):
        # First: each router's memory at its start is then the memory before any session.
        one, two = options.node_sessions
        for per_node in ({"a": one}, {"a": two // 2, "b": two - two // 2}):
            total = sum(per_node.values())
            run = partial(nodes.sessions, per_node=per_node, hold=options.hold)
            steps.append((f"sessions/{total}", 2 + options.hold + total / 700, run))
    if options.wants("nodes"):
        size, events = options.node_subscribers, options.node_events
        rate = 10.0 if size <= 100 else 2.0
        for key, per_node in (("single", {"a": size}), ("split", {"a": size, "b": size})):
            run = partial(nodes.fanout, per_node=per_node, events=events, rate=rate)
            cost = 2 + options.warmup + nodes.IDLE_SECONDS + sum(per_node.values()) / 250
            cost += events / rate
            steps.append((f"nodes/{key}", cost, run))
    if options.wants("restart"):
        # Stopping and starting the router, the clients' backoff, their catching up.
        expected = options.restart_before + 12 + options.restart_after
        run = partial(
            nodes.restart,
            clients=options.restart_clients,
            rate=options.restart_rate,
            before=options.restart_before,
            after=options.restart_after,
            expected=expected,
        )
        steps.append(("restart", expected + 2 + options.restart_clients / 100, run))
    return steps


def run(options: Options) -> dict[str, Any]:
    """Run the bench; returns the results (also written to options.out)."""
    one, two = options.node_sessions
    per_router = max(one, math.ceil(two / 2))
    _raise_open_files(max(4 * options.sessions, 2 * per_router, 16384))
    steps = plan(options)
    on_pair = [step for step in steps if step[0].split("/")[0] in PAIR_SECTIONS]
    on_main = [step for step in steps if step not in on_pair]
    starting = (MAIN_START if on_main else 0) + (PAIR_START if on_pair else 0)
    progress = Progress(starting + sum(cost for _, cost, _ in steps))
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
    if on_main:
        progress.step("starting the router, a worker and the subscriber", MAIN_START)
        with contextlib.ExitStack() as running:
            _run_main(running, workdir, options, progress, on_main, results)
    if on_pair:
        # Two shared-mode nodes of their own, once the main stack is gone.
        progress.step("starting nodes a and b (shared mode, Redis)", PAIR_START)
        with contextlib.ExitStack() as running:
            pair = nodes.start_pair(
                running,
                workdir / "pair",
                options.broker_url,
                progress,
                pool=options.pool,
                concurrency=options.concurrency,
                loglevel=options.loglevel,
                max_connections=per_router + nodes.SPARE_CONNECTIONS,
                warmup=options.warmup,
                broker_pids=_broker_pids(options.broker_url),
            )
            for name, cost, step in on_pair:
                progress.step(name, cost)
                _store(results, name, step(pair))
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


def _run_main(
    running: contextlib.ExitStack,
    workdir: Path,
    options: Options,
    progress: Progress,
    steps: list[Step],
    results: dict[str, Any],
) -> None:
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
        key = name.partition("/")[2]
        _store(results, name, step(stacks.get(key.partition("/")[0], bench)))


def _store(results: dict[str, Any], name: str, result: Any) -> None:
    """`section/key/round` into the rounds, `section/key` into its section, or `section`."""
    section, _, key = name.partition("/")
    if "/" in key:
        key = key.partition("/")[0]
        results.setdefault("rounds", {}).setdefault(key, []).append(result)
    elif key:
        results.setdefault(section, {})[key] = result
    else:
        results[section] = result


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
