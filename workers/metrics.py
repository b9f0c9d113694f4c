"""The worker's Prometheus endpoint and health checks, on a loopback port.

`http://127.0.0.1:<TIDINGS_WORKER_METRICS_PORT>/metrics` (Prometheus text),
`/livez` (the consumer's loop turns) and `/readyz` (both queues consumed,
the Publisher joined, no publish waiting longer than TIDINGS_PUBLISH_TIMEOUT).
One endpoint per worker instance: a prefork pool's children count into
files the parent sums (publisher.meters).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from publisher import meters
from publisher.publish_meters import ACK_SECONDS
from tidings.names import DEAD_LETTER_CODES, EVENTS_QUEUE, TASK_QUEUE

log = logging.getLogger(__name__)

CONSUMED = {
    TASK_QUEUE: meters.slot('tidings_events_consumed_total{source="task"}'),
    EVENTS_QUEUE: meters.slot('tidings_events_consumed_total{source="raw"}'),
}
REDELIVERED = meters.slot("tidings_events_redelivered_total")
DEAD_LETTERED = {
    code: meters.slot(f'tidings_events_dead_lettered_total{{reason="{code}"}}')
    for code in DEAD_LETTER_CODES
}
# The consumer's loop must have turned within this many seconds to be alive;
# before its first turn the process is given this long to start.
LIVE_WITHIN = 10.0
STARTUP_GRACE = 60.0


class Health:
    """What /livez and /readyz look at, told by the consumer steps and the ledger."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_turn: float | None = None
        self.consumer: Any = None  # Celery's Consumer
        self.raw_consumers: list[Any] = []
        self.publisher: Callable[[], Any] | None = None
        self.publish_timeout = 10.0

    def turn(self) -> None:
        """Called by the consumer's loop every second."""
        self.last_turn = time.monotonic()

    def live(self) -> str | None:
        """Why the worker is not alive, or None."""
        now = time.monotonic()
        if self.last_turn is None:
            if now - self.started < STARTUP_GRACE:
                return None
            return "the consumer never started"
        if now - self.last_turn > LIVE_WITHIN:
            return f"the consumer's loop has not turned for {now - self.last_turn:.0f} s"
        return None

    def not_ready(self) -> list[str]:
        """Why the worker cannot take events in and publish them right now."""
        reasons = []
        why = self.live()
        if why:
            reasons.append(why)
        consumer = self.consumer
        connection = getattr(consumer, "connection", None)
        if consumer is None or connection is None or not connection.connected:
            reasons.append("not connected to the broker")
        else:
            tasks = getattr(consumer, "task_consumer", None)
            queues = [q.name for q in getattr(tasks, "queues", ())]
            if TASK_QUEUE not in queues or not _channel_open(tasks):
                reasons.append(f"not consuming {TASK_QUEUE}")
            if not any(_channel_open(c) for c in self.raw_consumers):
                reasons.append(f"not consuming {EVENTS_QUEUE}")
        publisher = self.publisher() if self.publisher is not None else None
        if publisher is None or not publisher.connection.is_joined:
            reasons.append("the Publisher has no session with the router")
        else:
            waited = publisher.connection.oldest_wait()
            if waited > self.publish_timeout:
                reasons.append(f"a publish has waited {waited:.0f} s for the router")
        return reasons


def _channel_open(consumer: Any) -> bool:
    channel = getattr(consumer, "channel", None)
    return channel is not None and bool(getattr(channel, "is_open", True))


health = Health()


class WorkerCollector(Collector):
    """The worker's meters, summed over its threads (and a prefork pool's processes)."""

    def collect(self) -> Iterator[Metric]:
        totals = meters.totals()
        consumed = CounterMetricFamily(
            "tidings_events_consumed", "messages taken in, by source", labels=["source"]
        )
        consumed.add_metric(["task"], totals[CONSUMED[TASK_QUEUE]])
        consumed.add_metric(["raw"], totals[CONSUMED[EVENTS_QUEUE]])
        yield consumed
        yield _counter(totals, "tidings_events_published", "publishes the router acknowledged")
        dead = CounterMetricFamily(
            "tidings_events_dead_lettered",
            "messages moved to tidings.events.dead, by reason",
            labels=["reason"],
        )
        for code, index in DEAD_LETTERED.items():
            dead.add_metric([code], totals[index])
        yield dead
        yield CounterMetricFamily(
            "tidings_events_redelivered",
            "messages taken in again (after a crash, a lost connection or a hand-back)",
            totals[REDELIVERED],
        )
        buckets, seconds = ACK_SECONDS.read(totals)
        yield HistogramMetricFamily(
            "tidings_publish_ack_seconds",
            "seconds from a publish written to the router's acknowledgement",
            buckets=buckets,
            sum_value=seconds,
        )
        yield _gauge(totals, "tidings_publishes_in_flight", "publishes awaiting acknowledgement")
        yield _gauge(totals, "tidings_publisher_connected", "Publisher sessions joined")
        yield _counter(totals, "tidings_publisher_reconnects", "Publisher sessions joined again")
        yield _counter(
            totals, "tidings_publish_timeouts", "connections dropped for a late acknowledgement"
        )
        yield GaugeMetricFamily(
            "tidings_worker_ready", "1 when /readyz answers 200", 0 if health.not_ready() else 1
        )


def _counter(totals: list[int], name: str, help_text: str) -> Metric:
    return CounterMetricFamily(name, help_text, totals[meters.slot(f"{name}_total")])


def _gauge(totals: list[int], name: str, help_text: str) -> Metric:
    return GaugeMetricFamily(name, help_text, totals[meters.slot(name, gauge=True)])


registry = CollectorRegistry(auto_describe=False)
registry.register(WorkerCollector())


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
        elif self.path == "/livez":
            why = health.live()
            self._json(503 if why else 200, {"ok": False, "why": [why]} if why else {"ok": True})
        elif self.path == "/readyz":
            reasons = health.not_ready()
            self._json(503 if reasons else 200, {"ok": not reasons, "why": reasons})
        else:
            self._send(404, b"not found: /metrics, /livez, /readyz\n", "text/plain")

    def _json(self, status: int, body: dict[str, Any]) -> None:
        if body.get("ok"):
            body = {"ok": True}
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news


_server: ThreadingHTTPServer | None = None
_server_lock = threading.Lock()


def serve(port: int) -> None:
    """Listen on 127.0.0.1:`port` (0: off, and nothing is counted); once per process."""
    global _server
    with _server_lock:
        if not port:
            meters.switch_off()
            return
        if _server is not None:
            return
        try:
            _server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        except OSError as exc:
            log.error(
                "metrics off: cannot listen on 127.0.0.1:%d (%s); set "
                "TIDINGS_WORKER_METRICS_PORT to a free port, or 0",
                port,
                exc,
            )
            return
        _server.daemon_threads = True
    threading.Thread(target=_server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics at http://127.0.0.1:%d/metrics (and /livez, /readyz)", port)


def share_with_children() -> str:
    """A directory for a prefork pool's meters (publisher.meters), made before the pool
    forks and removed when this process exits."""
    directory = tempfile.mkdtemp(prefix="tidings-meters-")
    os.environ[meters.DIR_VARIABLE] = directory
    parent = os.getpid()

    def remove() -> None:
        if os.getpid() == parent:  # not in a child that happens to run it
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
    return directory
