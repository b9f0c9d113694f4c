"""Shared mode over two router nodes: fan-out split over the nodes, a router restart the
browsers recover from, and tens of thousands of idle sessions.

One deployment for all three: a throw-away Redis, one vhost, and nodes a and b, each a
router with one worker (docs/operations.md, "Shared mode and several router nodes").
A task or raw event is taken by either worker, recorded in the shared history, and
fanned out through `tidings.nodes` to each node's queue, whose worker publishes it
to its own router.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import stats
from bench.load import RawSender, TaskSender, drain, drive
from bench.monitor import Monitor
from bench.stack import Stack
from harness.memory import tree_rss
from harness.progress import Progress
from harness.redis_server import RedisServer, redis_server
from harness.swarm import Swarm, merge

NODES = ("a", "b")
# Events each topic's history holds: what comes at 200 events/s while a router restarts
# and its browsers back off, many times over.
HISTORY_SIZE = 5000
FANOUT_PER_PROCESS = 250
RECOVERING_PER_PROCESS = 100
# Idle sessions per client process: a lean session costs a client little, and fewer,
# fuller processes leave the two cores to the routers.
IDLE_PER_PROCESS = 1250
# Connections a router holds besides browsers' (its workers, the bench's own).
SPARE_CONNECTIONS = 1000
# Seconds of no events in a fan-out run, to measure what each process spends idle.
IDLE_SECONDS = 2.0


@dataclass
class Pair:
    """Nodes a and b in shared mode, with their meters; `clients` are the running swarms."""

    stacks: dict[str, Stack]
    redis: RedisServer
    monitor: Monitor
    progress: Progress
    warmup: float
    # Each router's memory once started, before any session: what sessions add is
    # measured from it (memory a router freed stays with it, for the next sessions).
    started_rss: dict[str, int] = field(default_factory=dict)
    clients: list[Swarm] = field(default_factory=list)

    @property
    def secret(self) -> str:
        return self.stacks["a"].secret

    @property
    def broker_url(self) -> str:
        return self.stacks["a"].broker_url

    def client_pids(self) -> list[int]:
        return [swarm.pid for swarm in self.clients]

    def worker_pids(self) -> list[int]:
        return [pid for stack in self.stacks.values() for pid in stack.worker_pids()]

    def note_started(self, node: str) -> None:
        self.started_rss[node] = tree_rss(self.stacks[node].router.pid)


def start_pair(
    running: contextlib.ExitStack,
    workdir: Path,
    broker_url: str,
    progress: Progress,
    *,
    pool: str,
    concurrency: int,
    loglevel: str,
    max_connections: int,
    warmup: float,
    broker_pids: list[int],
) -> Pair:
    """Redis, the vhost, and nodes a and b (router and one worker each), on free ports."""
    redis = running.enter_context(redis_server())
    stacks: dict[str, Stack] = {}
    for node in NODES:
        folder = workdir / f"node-{node}"
        folder.mkdir(parents=True, exist_ok=True)
        stack = Stack(
            folder,
            broker_url,
            pool=pool,
            concurrency=concurrency,
            loglevel=loglevel,
            redis_url=redis.url,
            node=node,
            share=stacks.get("a"),
            max_connections=max_connections,
            env={"TIDINGS_HISTORY_SIZE": str(HISTORY_SIZE)},
        )
        stacks[node] = running.enter_context(stack)
        progress.update(0.25 + 0.25 * len(stacks))
    for stack in stacks.values():
        stack.scale_workers(1)
    monitor = Monitor()
    pair = Pair(stacks, redis, monitor, progress, warmup)
    for node, stack in stacks.items():
        # Not watched while the restart run has it stopped.
        router = stack.router
        monitor.watch(f"router {node}", lambda r=router: [r.pid] if r.alive() else [])  # type: ignore[misc]
        pair.note_started(node)
    monitor.watch("workers", pair.worker_pids)
    monitor.watch("rabbitmq", lambda: broker_pids, recursive=False)
    if redis.proc is not None:
        redis_pid = redis.proc.pid
        monitor.watch("redis", lambda: [redis_pid], recursive=False)
    monitor.watch("clients", pair.client_pids)
    monitor.watch("bench", lambda: [os.getpid()], recursive=False)
    progress.update(1.0)
    return pair


def _sizes(total: int, per_process: int) -> list[int]:
    sizes = [per_process] * (total // per_process)
    if total % per_process:
        sizes.append(total % per_process)
    return sizes


def _swarms(
    pair: Pair,
    per_node: dict[str, int],
    per_process: int,
    topic: str | None,
    name: str,
    *,
    recover: bool = False,
) -> dict[str, list[Swarm]]:
    """Client processes for `per_node` sessions on each node's router, started."""
    swarms: dict[str, list[Swarm]] = {}
    for node, count in per_node.items():
        url = pair.stacks[node].router.ws_url
        swarms[node] = [
            Swarm(url, pair.secret, size, topic, f"{name}{node}{i}-", recover=recover).start()
            for i, size in enumerate(_sizes(count, per_process))
        ]
    pair.clients = [swarm for group in swarms.values() for swarm in group]
    return swarms


def _close(pair: Pair) -> None:
    for swarm in pair.clients:
        swarm.close()
    pair.clients = []


def _settle(pair: Pair, timeout: float = 15, busy: float = 0.15) -> float:
    """Wait until no router spends more than `busy` of a core (thousands of sessions just
    closed keep it busy a while), so that the next run starts on a quiet router; the
    seconds it took."""
    began = time.monotonic()

    def cpu() -> dict[str, float]:
        used: dict[str, float] = {}
        for node, stack in pair.stacks.items():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(stack.router.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        used[node] = used.get(node, 0.0) + times.user + times.system
        return used

    last, at = cpu(), time.monotonic()
    while time.monotonic() - began < timeout:
        time.sleep(0.5)
        now, then = cpu(), time.monotonic()
        spent = [now.get(node, 0.0) - last.get(node, 0.0) for node in now]
        if all(s / (then - at) < busy for s in spent):
            break
        last, at = now, then
    return round(time.monotonic() - began, 1)


# -- fan-out over two nodes --------------------------------------------------------------
def fanout(pair: Pair, per_node: dict[str, int], events: int, rate: float) -> dict[str, Any]:
    """`events` tidings.publish tasks at `rate` to one topic with `per_node` subscribers on
    each node's router; per event, the time from enqueue until the last subscriber of
    every node has it, and the CPU each process spent per copy delivered."""
    topic = "tidings.entity.bench.nodes-" + "-".join(f"{n}{c}" for n, c in per_node.items())
    swarms = _swarms(pair, per_node, FANOUT_PER_PROCESS, topic, "fan")
    everyone = pair.clients
    sender: TaskSender | None = None
    try:
        for swarm in everyone:
            swarm.wait_joined(120)
        joined = sum(s.joined for s in everyone)
        sender = TaskSender(pair.broker_url, "tidings.publish", topic)
        received = lambda: sum(s.received.value for s in everyone)  # noqa: E731
        # Warm-up, left out: the first tasks of a worker, the first copies to new sessions.
        warm = drive(sender, pair.warmup, delivered=lambda: received() // max(joined, 1), rate=rate)
        drain(received, warm.sent * joined, timeout=30)
        for swarm in everyone:
            swarm.collect()
        base = received()
        total = lambda: received() - base  # noqa: E731
        # What each process spends with no events, to be left out of the cost per event:
        # at a few events a second, a broker's or a worker's own ticking would be most of it.
        idle_began = time.monotonic()
        with pair.monitor.measure() as idle:
            time.sleep(IDLE_SECONDS)
        idle_wall = time.monotonic() - idle_began
        began = time.monotonic()
        with pair.monitor.measure() as usage:
            driven = drive(
                sender,
                events / rate,
                delivered=lambda: total() // max(joined, 1),
                rate=rate,
                tick=pair.progress.update,
            )
            drained = drain(total, driven.sent * joined, timeout=30)
        wall = time.monotonic() - began
        by_node = {node: merge([s.collect()[0] for s in group]) for node, group in swarms.items()}
        copies = total()
    finally:
        if sender is not None:
            sender.close()
        _close(pair)
    arrivals = merge(list(by_node.values()))
    values = stats.latencies_ms(arrivals, until_last=True)
    nodes = {
        node: {
            "subscribers": sum(s.joined for s in swarms[node]),
            **stats.summary_ms(stats.latencies_ms(by_node[node], until_last=True), points=(50, 99)),
        }
        for node in swarms
    }
    return {
        "subscribers": joined,
        "per_node": {node: nodes[node]["subscribers"] for node in nodes},
        **stats.summary_ms(values, points=(50, 99)),
        "events": driven.sent,
        "copies": copies,
        "incomplete": stats.incomplete(arrivals, joined) + driven.sent - len(arrivals),
        "drained": drained,
        "by_node": nodes,
        "seconds": round(wall, 2),
        # Above each process's idle use (`idle`), per copy delivered and per event.
        "cpu_us_per_copy": cpu_per(usage, copies, idle, wall / idle_wall),
        "cpu_us_per_event": cpu_per(usage, driven.sent, idle, wall / idle_wall),
        "usage": usage,
        "idle": idle,
    }


def cpu_per(
    usage: dict[str, dict[str, float]],
    count: int,
    idle: dict[str, dict[str, float]] | None = None,
    scale: float = 1.0,
) -> dict[str, float]:
    """Microseconds of CPU per one of `count` (events, copies), by process group; less
    `idle`'s CPU times `scale` (the run's length over the idle measurement's), if given."""
    out: dict[str, float] = {}
    for name, group in usage.items():
        if "cpu_seconds" not in group:
            continue
        spent = group["cpu_seconds"]
        if idle is not None and name in idle:
            spent = max(0.0, spent - idle[name].get("cpu_seconds", 0.0) * scale)
        out[name] = round(spent / count * 1e6, 2) if count else math.nan
    return out


# -- a router restart --------------------------------------------------------------------
class _Stream:
    """Raw events to one topic at a steady rate on a thread of its own, until stopped."""

    def __init__(self, sender: RawSender, rate: float) -> None:
        self.sender = sender
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-stream", daemon=True)

    def start(self) -> _Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        began = time.monotonic()
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - began) * self.rate) + 1
                while self.sent < due:
                    self.sender.send(self.sent)
                    self.sent += 1
                self.sender.flush()
                self._stop.wait(max(0.0, began + self.sent / self.rate - time.monotonic()))
        except BaseException as exc:  # reported by stop(), in the bench's thread
            self.error = exc

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"the event stream failed: {self.error!r}") from self.error
        return self.sent


def _wait(seconds: float, tick: Callable[[], None]) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        tick()
        time.sleep(min(0.2, max(0.0, until - time.monotonic())))


def restart(
    pair: Pair, clients: int, rate: float, before: float, after: float, expected: float
) -> dict[str, Any]:
    """`clients` recovering browsers on node a under `rate` raw events/s; node a's router
    is stopped and started again `before` s in, and the stream goes on `after` s past
    its return. Per client: the seconds from the router's stop until it had every event
    sent before its new session joined (missed while away, from the history, or still on
    its way); events missed, history gaps."""
    stack = pair.stacks["a"]
    topic = "tidings.entity.bench.restart"
    swarms = _swarms(pair, {"a": clients}, RECOVERING_PER_PROCESS, topic, "rec", recover=True)
    everyone = pair.clients
    sender: RawSender | None = None
    began = time.monotonic()

    def tick() -> None:
        pair.progress.update((time.monotonic() - began) / expected)

    try:
        for swarm in everyone:
            swarm.wait_joined(120)
        joined = sum(s.joined for s in everyone)
        sender = RawSender(pair.broker_url, topic, prefix=f"restart-{os.getpid()}")
        total = lambda: sum(s.received.value for s in everyone)  # noqa: E731
        with pair.monitor.measure() as usage:
            stream = _Stream(sender, rate).start()
            _wait(before, tick)
            stopped = time.time()
            stack.router.stop()
            down = time.time()
            stack.router.start()
            back = time.time()
            _wait(after, tick)
            sent = stream.stop()
            drained = drain(total, sent * joined, timeout=30)
        reports = [report for swarm in everyone for report in swarm.recovery(sent)]
        arrivals = merge([s.collect()[0] for s in everyone])
    finally:
        if sender is not None:
            sender.close()
        _close(pair)
    del swarms
    # A client has recovered once every event sent before its new session joined is in.
    recovered = [
        r for r in reports if r["joins"] >= 2 and r["missing"] == 0 and r["caught"] >= stopped
    ]
    seconds = sorted(round(r["caught"] - stopped, 3) for r in recovered)
    rejoined = [r["joined_at"] - stopped for r in reports if r["joins"] >= 2 and r["joined_at"]]
    # From its new session's join until it had every event again: the catching up itself.
    catching_up = [r["caught"] - r["joined_at"] for r in recovered if r["joined_at"]]
    return {
        "clients": joined,
        "rate": rate,
        "sent": sent,
        "router_stop_s": round(down - stopped, 2),
        "router_down_s": round(back - stopped, 2),
        "rejoin_p50_s": round(stats.percentile(rejoined, 50), 2),
        "rejoin_max_s": round(max(rejoined), 2) if rejoined else math.nan,
        "catch_up_p50_s": round(stats.percentile(catching_up, 50), 2),
        "catch_up_p99_s": round(stats.percentile(catching_up, 99), 2),
        "recovered_clients": len(recovered),
        "p50_s": round(stats.percentile(seconds, 50), 2),
        "p99_s": round(stats.percentile(seconds, 99), 2),
        "max_s": max(seconds) if seconds else math.nan,
        "recovery_s": seconds,
        "rejoin_s": sorted(round(r, 3) for r in rejoined),
        "missed": sum(r["missing"] for r in reports),
        "events_missed_by_some": stats.incomplete(arrivals, joined) + sent - len(arrivals),
        "gaps": sum(r["gaps"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "from_history": sum(r["recovered"] for r in reports),
        "duplicates": sum(r["duplicates"] for r in reports),
        "drained": drained,
        "usage": usage,
    }


# -- idle sessions -----------------------------------------------------------------------
def _fd_limit(pid: int) -> int:
    try:
        return int(psutil.Process(pid).rlimit(resource.RLIMIT_NOFILE)[0])
    except (psutil.Error, OSError):
        return -1


def _port_range() -> int:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(high) - int(low) + 1
    except (OSError, ValueError):
        return -1


def sessions(
    pair: Pair, per_node: dict[str, int], hold: float, timeout: float = 240
) -> dict[str, Any]:
    """`per_node` idle authenticated WebSocket sessions on each node's router, from client
    processes of IDLE_PER_PROCESS sessions; held through the routers' keep-alive pings.
    Per router: its memory per session (over its memory at start), and the time until
    all had joined."""
    total = sum(per_node.values())
    before = {node: tree_rss(pair.stacks[node].router.pid) for node in per_node}
    limits = {
        node: {
            "fd_limit": _fd_limit(pair.stacks[node].router.pid),
            "max_connections": pair.stacks[node].max_connections,
        }
        for node in per_node
    }
    began = time.monotonic()
    late: list[Swarm] = []  # still joining when time ran out: counted as none joined
    with pair.monitor.measure() as usage:
        swarms = _swarms(pair, per_node, IDLE_PER_PROCESS, None, "idle")
        try:
            for swarm in pair.clients:
                try:
                    swarm.wait_joined(max(1.0, timeout - (time.monotonic() - began)))
                except TimeoutError:
                    late.append(swarm)
                done = sum(s.joined for s in pair.clients)
                pair.progress.update(0.8 * done / total)
            wall = time.monotonic() - began
            joined = {node: sum(s.joined for s in group) for node, group in swarms.items()}
            held_until = time.monotonic() + hold
            while time.monotonic() < held_until:
                pair.progress.update(0.8 + 0.2 * (1 - (held_until - time.monotonic()) / hold))
                time.sleep(0.25)
            left = {
                node: sum(s.collect()[1] for s in group if s not in late)
                for node, group in swarms.items()
            }
            after = {node: tree_rss(pair.stacks[node].router.pid) for node in per_node}
        finally:
            _close(pair)
    settled = _settle(pair)
    failures: Counter[str] = Counter()
    for group in swarms.values():
        for swarm in group:
            failures.update(swarm.failures)
    nodes: dict[str, dict[str, Any]] = {}
    for node in per_node:
        held = joined[node] - left[node]
        start = pair.started_rss.get(node, before[node])
        nodes[node] = {
            "sessions": per_node[node],
            "joined": joined[node],
            "held": held,
            "router_rss_start_mb": round(start / 2**20, 1),
            "router_rss_before_mb": round(before[node] / 2**20, 1),
            "router_rss_after_mb": round(after[node] / 2**20, 1),
            "router_kib_per_session": round((after[node] - start) / max(held, 1) / 1024, 1),
            **limits[node],
        }
    held_all = sum(int(n["held"]) for n in nodes.values())
    return {
        "sessions": total,
        "joined": sum(joined.values()),
        "held": held_all,
        "nodes": nodes,
        "finished_joining": not late,
        "wall_seconds": round(wall, 2),
        "connect_seconds": round(max(s.connect_seconds for g in swarms.values() for s in g), 2),
        "joins_per_s": round(sum(joined.values()) / max(wall, 1e-9), 0),
        "client_processes": sum(len(group) for group in swarms.values()),
        "failures": dict(failures),
        "settle_seconds": settled,
        "bench_fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "local_ports": _port_range(),
        "usage": usage,
    }
