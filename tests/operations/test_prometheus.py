"""A real Prometheus server scrapes the worker and the router; PromQL sees the workload."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.ports import free_port, wait_port
from harness.processes import ROOT
from harness.producers import EventSource

TOPIC = "tidings.user.ops-prometheus"
EVENTS = 120
PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        PROMETHEUS is None, reason="needs Prometheus (apt install prometheus; .ci/run does)"
    ),
]


class Prometheus:
    """`prometheus` on a free loopback port, scraping `targets` every second."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, 30, lambda: self.proc.poll() is None)
        deadline = time.monotonic() + 30
        while not self._ready():
            assert time.monotonic() < deadline, "Prometheus did not get ready"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = self.url("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, wanted: Any, timeout: float = 30) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            found = self.value(promql)
            if wanted(found):
                return found
            assert time.monotonic() < deadline, f"{promql} = {found} after {timeout} s"
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def prometheus_of(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: dict[str, int]) -> Prometheus:
        server = Prometheus(tmp_path / "prometheus", targets)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_prometheus_scrapes_both_and_promql_sees_the_rate(
    own_router, vhost, start_worker, subscribe, prometheus_of
):
    worker = start_worker(own_router, vhost)
    counter = subscribe(own_router.ws_url, "ops-prometheus", [TOPIC])
    prometheus = prometheus_of({"worker": worker.metrics_port, "router": own_router.metrics_port})
    # Both scraped, and the worker's counter seen before any event.
    prometheus.wait_for('sum(up{job=~"worker|router"})', lambda v: v == 2)
    published = 'tidings_events_published_total{job="worker"}'
    before = prometheus.wait_for(published, lambda v: v is not None)
    source = EventSource(vhost, TOPIC)
    began = time.monotonic()
    try:
        ids = set()
        for n in range(EVENTS):  # about 40 a second, for about three seconds
            ids.add(source.raw(n))
            time.sleep(0.025)
        counter.wait_all(ids, 30)
    finally:
        source.close()
    took = time.monotonic() - began
    assert before is not None
    prometheus.wait_for(published, lambda v: v == before + EVENTS)
    # The rate over the stream, as an operator's dashboard would show it.
    window = max(5, int(took) + 2)
    rate = prometheus.value(f"increase({published}[{window}s]) / {window}")
    assert rate is not None and EVENTS / window / 2 < rate < EVENTS / window * 2, rate
    buckets = f'tidings_publish_ack_seconds_bucket{{job="worker"}}[{window}s]'
    latency = prometheus.value(f"histogram_quantile(0.99, rate({buckets}))")
    assert latency is not None and 0 < latency <= 10, latency
    # The router: its counting subscriber signed in, and it holds its subscription.
    assert prometheus.value('tidings_auth_total{job="router",result="ok"}') >= 1
    assert prometheus.value('tidings_router_sessions{job="router",role="frontend"}') == 1
    assert prometheus.value('tidings_router_ready{job="router"}') == 1
    # The shipped dashboard and alert rules ask for what is exported, in valid PromQL.
    with urllib.request.urlopen(prometheus.url("/api/v1/label/__name__/values")) as answer:
        exported = set(json.loads(answer.read())["data"])
    for expr in monitoring_expressions():
        prometheus.query(expr)  # raises unless Prometheus accepts it
        used = set(re.findall(r"\btidings_\w+", expr))
        assert used <= exported, (expr, used - exported)


def monitoring_expressions() -> list[str]:
    """Every PromQL expression of docs/monitoring (dashboard panels, alert rules)."""
    folder = ROOT / "docs" / "monitoring"
    dashboard = json.loads((folder / "grafana-dashboard.json").read_text())
    found = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    found += re.findall(r"^\s+expr: >?\n?((?:.+\n?)+?)(?=^\s+(?:for|labels):)",
                        (folder / "alerts.yml").read_text(), re.M)  # fmt: skip
    assert len(found) > 20
    return [" ".join(expr.split()) for expr in found]


def test_the_alert_rules_load_in_prometheus():
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the prometheus package"
    checked = subprocess.run(
        [promtool, "check", "rules", str(ROOT / "docs" / "monitoring" / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "7 rules found" in checked.stdout
