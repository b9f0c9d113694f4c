"""What the router process tells Prometheus and load balancers: counts, sizes and readiness.

The router-side components count what they do (`count`), say whether they
are ready (`ready`), and offer their sizes (`provide`); sessions and
subscriptions are read from Crossbar's router when scraped. `serve` puts the
Prometheus endpoint on a loopback port (TIDINGS_ROUTER_METRICS_PORT);
router.health answers load balancers on the web port.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import txaio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

log = txaio.make_logger()  # type: ignore[attr-defined]

# The components /health waits for; each says `ready(name)` once it can serve.
COMPONENTS = ("authorizer", "history", "presence", "maintenance", "chat")

AUTH_RESULTS = ("ok", "invalid", "expired", "used", "unavailable")
HISTORY_RESULTS = ("ok", "gap", "denied", "invalid", "unavailable")

_lock = threading.Lock()  # tickets are checked on threads too
_counts: Counter[tuple[str, str]] = Counter()
_ready: dict[str, str | None] = {name: "starting" for name in COMPONENTS}
_providers: dict[str, Callable[[], dict[str, float]]] = {}
_router: Any = None


def count(family: str, result: str) -> None:
    """One more `result` of `family` ("auth", "history"); from any thread."""
    with _lock:
        _counts[family, result] += 1


def ready(component: str, why_not: str | None = None) -> None:
    """A component can serve (`why_not` None), or cannot and says why in a few words."""
    _ready[component] = why_not


def readiness() -> list[str]:
    """Why the router is not ready, one short reason per component; empty when it is."""
    return [f"{name}: {why}" for name, why in _ready.items() if why is not None]


def provide(name: str, sizes: Callable[[], dict[str, float]]) -> None:
    """`sizes()` is read at every scrape: {"history_events": ..., ...}."""
    _providers[name] = sizes


def saw_router(router: Any) -> None:
    """Crossbar's router of the realm (an embedded component's transport holds it)."""
    global _router
    _router = router


class RouterCollector(Collector):
    """The router's metrics, read when scraped (on the reactor's thread)."""

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(
            "tidings_router_sessions", "WAMP sessions joined, by role", labels=["role"]
        )
        subscriptions = 0
        router = _router
        by_role: Counter[str] = Counter()
        if router is not None:
            for session in list(router._session_id_to_session.values()):
                by_role[getattr(session, "_authrole", None) or "none"] += 1
            held = router._broker._session_to_subscriptions
            subscriptions = sum(len(s) for s in list(held.values()))
        for role in ("frontend", "backend"):
            sessions.add_metric([role], by_role[role])
        yield sessions
        yield GaugeMetricFamily(
            "tidings_router_subscriptions", "subscriptions held by all sessions", subscriptions
        )
        with _lock:
            counts = dict(_counts)
        for family, results, help_text in (
            ("auth", AUTH_RESULTS, "browser sign-ins, by result"),
            ("history", HISTORY_RESULTS, "tidings.history.since calls, by result"),
        ):
            name = "tidings_auth" if family == "auth" else "tidings_history_requests"
            metric = CounterMetricFamily(name, help_text, labels=["result"])
            for result in results:
                metric.add_metric([result], counts.get((family, result), 0))
            yield metric
        sizes: dict[str, float] = {}
        for provider in list(_providers.values()):
            try:
                sizes.update(provider())
            except Exception:
                log.failure("reading a component's sizes failed")
        for name, help_text in _SIZES.items():
            if name in sizes:
                yield GaugeMetricFamily(f"tidings_{name}", help_text, sizes[name])
        yield GaugeMetricFamily(
            "tidings_router_ready",
            "1 when the router and its components can serve",
            0 if readiness() else 1,
        )


_SIZES = {
    "history_events": "events held for missed-event recovery (memory mode)",
    "history_bytes": "bytes those events take (memory mode)",
    "history_topics": "topics with events held (memory mode)",
    "presence_users": "users on at least one record, on this node",
    "presence_records": "records and rooms with at least one user, on this node",
}

registry = CollectorRegistry(auto_describe=False)
registry.register(RouterCollector())


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of the router's metrics, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


_serving = False


def serve(port: int) -> None:
    """The Prometheus endpoint at http://127.0.0.1:<port>/metrics; once per process, 0: off."""
    global _serving
    if _serving or not port:
        return
    from twisted.internet import reactor as the_reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Metrics(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            if request.path != b"/metrics":
                request.setResponseCode(404)
                return b"not found; the metrics are at /metrics\n"
            body, content_type = exposition()
            request.setHeader(b"content-type", content_type.encode())
            return body

    try:
        reactor: Any = the_reactor
        reactor.listenTCP(port, Site(Metrics()), interface="127.0.0.1")
    except Exception as exc:
        log.error(
            "metrics off: cannot listen on 127.0.0.1:{port} ({why}); "
            "set TIDINGS_ROUTER_METRICS_PORT to a free port, or 0",
            port=port,
            why=exc,
        )
        return
    _serving = True
    log.info("metrics at http://127.0.0.1:{port}/metrics", port=port)
