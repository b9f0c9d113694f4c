"""`tidings status`: every part reported, and a non-zero exit as soon as one is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cli import status
from harness.ports import free_port
from harness.processes import base_env
from tidings.settings import Settings

TIDINGS = str(Path(sys.executable).parent / "tidings")

pytestmark = pytest.mark.timeout(120)


def run_status(*extra: str, **env: str) -> tuple[int, dict[str, Any] | str]:
    """Run `tidings status`; (exit status, the JSON report or, with no `--json`, the text)."""
    result = subprocess.run(
        [TIDINGS, "status", "--timeout", "4", *extra],
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout) if "--json" in extra else result.stdout


def check(**changes: str) -> list[str]:
    """What is down, checked in this process (the command's exit status is tested above)."""
    return status.check(replace(Settings.from_environ(os.environ), **changes), timeout=4).down


def test_status_all_up_then_each_part_down(router, vhost, start_worker, subscribe):
    worker = start_worker(router, vhost)
    subscribe(router.ws_url, "fault-status", ["tidings.user.fault-status"])
    env = {
        "TIDINGS_ROUTER_URL": router.rs_url,
        "TIDINGS_BROKER_URL": vhost,
        "TIDINGS_HTTP_PORT": str(router.web_port),
        "TIDINGS_WORKER_METRICS_PORT": str(worker.metrics_port),
    }

    code, report = run_status("--json", **env)
    assert code == 0, report
    assert isinstance(report, dict) and report["ok"] and report["down"] == []
    assert report["sessions"]["browsers"] >= 1  # the subscriber above
    assert report["sessions"]["backend"] >= 1  # the worker's Publisher
    queues = report["queues"]
    assert queues["tidings"]["consumers"] >= 1 and queues["tidings.events"]["consumers"] >= 1
    assert queues["tidings.events.dead"]["messages"] == 0
    assert report["router_health"] == "ok" and report["worker_readiness"] == "ok"
    code, text = run_status(**env)
    assert code == 0 and "status           ok" in str(text), text

    down_broker = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    code, text = run_status(**{**env, "TIDINGS_BROKER_URL": down_broker})
    assert code == 1
    assert "broker           DOWN" in str(text) and "status           DOWN: broker" in str(text)
    assert "guest:guest" not in str(text)  # the password is not printed

    up = {
        "router_url": router.rs_url,
        "broker_url": vhost,
        "http_port": router.web_port,
        "worker_metrics_port": worker.metrics_port,
    }
    assert check(**up) == []
    down_router = f"rs://127.0.0.1:{free_port()}"
    assert check(**{**up, "router_url": down_router}) == ["router", "backend session"]
    assert check(**up, backend_secret="not-the-secret") == ["backend session"]
    worker.stop()
    assert check(**up) == [
        "worker (no consumer on tidings)",
        "worker (no consumer on tidings.events)",
    ]
