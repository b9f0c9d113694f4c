"""The bench's runs: throughput per path, latency at a fixed rate, fan-out, and idle connections."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import counter, stats
from bench.load import (
    ChatSender,
    DirectSender,
    Driven,
    RawSender,
    Sender,
    TaskSender,
    drain,
    drive,
)
from bench.monitor import Monitor
from bench.stack import Stack
from harness.memory import tree_rss
from harness.progress import Progress
from harness.swarm import Swarm, merge

TOPIC = "tidings.entity.bench.1"

# Path key -> what it is. "a2" is (a) with two worker processes.
PATHS: dict[str, str] = {
    "a": "tidings, Celery task, 1 worker process",
    "a2": "tidings, Celery task, 2 worker processes",
    "a'": "tidings, raw JSON domain event",
    "a's": "the same, shared mode (Redis history)",
    "a'0": "the same, metrics off",
    "a0": "tidings, Celery task, metrics off",
    "b": "HTTP bridge, signed POST per event",
    "c": "new WAMP connection per Celery task",
    "d": "one WAMP session straight to router",
    "e": "no-op Celery task, same settings",
}
TASKS = {
    "a": "tidings.publish",
    "a2": "tidings.publish",
    "a0": "tidings.publish",
    "b": "bench.http_publish",
    "c": "bench.connect_publish",
    "e": "bench.noop",
}
# Events allowed ahead of delivery: enough to fill the worker's prefetch and
# the router's pipeline, little enough that the queue drains in a second.
WINDOW = {"b": 300, "c": 150}
DEFAULT_WINDOW = 1200
FANOUT_PER_PROCESS = 250
# Chat senders: browsers' sessions, each under the router's per-session message rate.
CHAT_SENDERS = 50


@dataclass
class Bench:
    """Everything a run needs: the processes, the receiving subscriber, the meters."""

    stack: Stack
    monitor: Monitor
    progress: Progress
    subscriber: Swarm
    seconds: float
    warmup: float
    clients: list[Swarm] = field(default_factory=list)

    def client_pids(self) -> list[int]:
        return [swarm.pid for swarm in [self.subscriber, *self.clients]]

    def workers_for(self, path: str) -> int:
        return 2 if path == "a2" else 1

    def sender(self, path: str, topic: str = TOPIC) -> Sender:
        if path in ("a'", "a's", "a'0"):
            return RawSender(self.stack.broker_url, topic)
        if path == "d":
            return DirectSender(self.stack.router.rs_url, self.stack.backend_secret, topic)
        return TaskSender(self.stack.broker_url, TASKS[path], topic)

    def delivered(self, path: str) -> Callable[[], int]:
        """A running count of events that made it to the end of `path`, from zero now."""
        if path == "e":
            folder = self.stack.counts
            base = counter.total(folder)
            return lambda: counter.total(folder) - base
        received = self.subscriber.received
        start = received.value
        return lambda: received.value - start


def throughput(bench: Bench, path: str) -> dict[str, Any]:
    """As many events as delivery allows, for warm-up plus `seconds`; the rate is taken
    over the last `seconds` only."""
    bench.stack.scale_workers(bench.workers_for(path))
    bench.subscriber.collect()
    sender = bench.sender(path)
    delivered = bench.delivered(path)
    window = WINDOW.get(path, DEFAULT_WINDOW)
    try:
        with bench.monitor.measure() as usage:
            driven = drive(
                sender,
                bench.warmup + bench.seconds,
                delivered=delivered,
                window=window,
                tick=bench.progress.update,
            )
            drained = drain(delivered, driven.sent, timeout=30)
    finally:
        sender.close()
    bench.subscriber.collect()
    start = driven.started + bench.warmup
    rate = stats.rate_from_samples(driven.samples, start, start + bench.seconds)
    return {
        "path": PATHS[path],
        "workers": bench.workers_for(path),
        "events_per_s": round(rate, 1),
        "seconds": bench.seconds,
        "sent": driven.sent,
        "delivered": delivered(),
        "drained": drained,
        "usage": usage,
    }


def latency(bench: Bench, path: str, rate: float) -> dict[str, Any]:
    """A fixed offered rate; enqueue-to-subscriber latency of every event after warm-up."""
    bench.stack.scale_workers(bench.workers_for(path))
    bench.subscriber.collect()
    sender = bench.sender(path)
    delivered = bench.delivered(path)
    try:
        with bench.monitor.measure() as usage:
            driven = drive(
                sender,
                bench.warmup + bench.seconds,
                delivered=delivered,
                rate=rate,
                tick=bench.progress.update,
            )
            drained = drain(delivered, driven.sent, timeout=30)
    finally:
        sender.close()
    arrivals, _ = bench.subscriber.collect()
    values = stats.latencies_ms(arrivals, sent_after=driven.started + bench.warmup)
    return {
        "path": PATHS[path],
        "rate": rate,
        **stats.summary_ms(values),
        "sent": driven.sent,
        "delivered": len(arrivals),
        "drained": drained,
        "usage": usage,
    }


def _swarms(
    bench: Bench,
    total: int,
    per_process: int,
    topic: str | None,
    name: str,
    perms: list[str] | None = None,
) -> list[Swarm]:
    sizes = [per_process] * (total // per_process)
    if total % per_process:
        sizes.append(total % per_process)
    url, secret = bench.stack.router.ws_url, bench.stack.secret
    swarms = [
        Swarm(url, secret, size, topic, f"{name}{i}", perms).start() for i, size in enumerate(sizes)
    ]
    bench.clients = swarms
    return swarms


def _to_audience(
    bench: Bench,
    swarms: list[Swarm],
    sender: Sender,
    seconds: float,
    rate: float | None,
    window: int = 1000,
) -> tuple[Driven, bool]:
    """Send to every joined session of `swarms` for `seconds` (at `rate`, or as fast as the
    slowest gets them), then wait until each has every event; False if it never did."""
    joined = max(sum(s.joined for s in swarms), 1)
    total = lambda: sum(s.received.value for s in swarms)  # noqa: E731
    driven = drive(
        sender,
        seconds,
        delivered=lambda: total() // joined,
        rate=rate,
        window=window,
        tick=bench.progress.update,
    )
    return driven, drain(total, driven.sent * joined, timeout=30)


def _close(bench: Bench, swarms: list[Swarm]) -> None:
    for swarm in swarms:
        swarm.close()
    bench.clients = []


def fanout(bench: Bench, size: int, events: int, rate: float) -> dict[str, Any]:
    """`events` tidings.publish tasks to one topic with `size` subscribers; per event, the
    time from enqueue until the last subscriber has it."""
    bench.stack.scale_workers(1)
    topic = f"tidings.entity.bench.fan{size}"
    # A client process decodes every copy; a few hundred each keeps the
    # clients from being what is measured.
    swarms = _swarms(bench, size, FANOUT_PER_PROCESS, topic, f"fan{size}-")
    sender: Sender | None = None
    try:
        for swarm in swarms:
            swarm.wait_joined(120)
        joined = sum(s.joined for s in swarms)
        sender = bench.sender("a", topic)
        with bench.monitor.measure() as usage:
            driven, _ = _to_audience(bench, swarms, sender, events / rate, rate)
        arrivals = merge([s.collect()[0] for s in swarms])
    finally:
        if sender is not None:
            sender.close()
        _close(bench, swarms)
    values = stats.latencies_ms(arrivals, until_last=True)
    return {
        "subscribers": joined,
        **stats.summary_ms(values, points=(50, 99)),
        "events": driven.sent,
        "incomplete": stats.incomplete(arrivals, joined) + driven.sent - len(arrivals),
        "usage": usage,
    }


def chat(bench: Bench, members: int, rate: float | None) -> dict[str, Any]:
    """Messages through `tidings.chat.send` to a room of `members`: at `rate` messages/s,
    or (None) as fast as every member gets them. Per message, the time from the send
    until the last member has it; messages/s delivered to every member."""
    bench.stack.scale_workers(1)
    room = f"bench{members}"
    topic = f"tidings.chat.{room}"
    swarms = _swarms(bench, members, FANOUT_PER_PROCESS, topic, room, [f"chat:{room}:join"])
    sender: ChatSender | None = None
    try:
        for swarm in swarms:
            swarm.wait_joined(120)
        joined = sum(s.joined for s in swarms)
        sender = ChatSender(bench.stack.router.ws_url, bench.stack.secret, room, CHAT_SENDERS)
        with bench.monitor.measure() as usage:
            seconds = bench.warmup + bench.seconds
            driven, drained = _to_audience(bench, swarms, sender, seconds, rate, window=200)
        arrivals = merge([s.collect()[0] for s in swarms])
        errors, first_error = sender.errors, sender.first_error
    finally:
        if sender is not None:
            sender.close()
        _close(bench, swarms)
    measured_from = driven.started + bench.warmup
    values = stats.latencies_ms(arrivals, sent_after=measured_from, until_last=True)
    return {
        "members": joined,
        "rate": rate,
        "messages_per_s": stats.rate_from_samples(driven.samples, measured_from, driven.stopped),
        **stats.summary_ms(values, points=(50, 99)),
        "sent": driven.sent,
        "errors": errors,
        "first_error": first_error,
        "incomplete": stats.incomplete(arrivals, joined) + driven.sent - len(arrivals),
        "drained": drained,
        "usage": usage,
    }


def connections(bench: Bench, total: int, processes: int, hold: float) -> dict[str, Any]:
    """`total` idle authenticated WebSocket sessions from several client processes; the
    router's memory per session and the time until all have joined."""
    router_pid = bench.stack.router.pid
    before = tree_rss(router_pid)
    per_process = math.ceil(total / processes)
    with bench.monitor.measure() as usage:
        swarms = _swarms(bench, total, per_process, None, "idle")
        try:
            began = time.monotonic()
            for swarm in swarms:
                swarm.wait_joined(240)
                bench.progress.update(0.8 * sum(s.joined for s in swarms) / total)
            wall = time.monotonic() - began
            joined = sum(s.joined for s in swarms)
            # Hold them through at least one of the router's auto-pings.
            held_until = time.monotonic() + hold
            while time.monotonic() < held_until:
                bench.progress.update(0.8 + 0.2 * (1 - (held_until - time.monotonic()) / hold))
                time.sleep(0.25)
            left = sum(s.collect()[1] for s in swarms)
            after = tree_rss(router_pid)
        finally:
            _close(bench, swarms)
    held = joined - left
    return {
        "sessions": total,
        "joined": joined,
        "held": held,
        "connect_seconds": round(max(s.connect_seconds for s in swarms), 2),
        "wall_seconds": round(wall, 2),
        "client_processes": len(swarms),
        "router_rss_before_mb": round(before / 2**20, 1),
        "router_rss_after_mb": round(after / 2**20, 1),
        "router_kib_per_session": round((after - before) / max(held, 1) / 1024, 1),
        "usage": usage,
    }
