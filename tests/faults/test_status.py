"""`tidings status`: every part reported, and a non-zero exit as soon as one is down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port
from tests.support.processes import base_env

TIDINGS = str(Path(sys.executable).parent / "tidings")

pytestmark = pytest.mark.timeout(120)


def status(*extra: str, **env: str) -> tuple[int, dict[str, Any] | str]:
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


def test_status_all_up_then_each_part_down(router, vhost, start_worker, subscribe):
    worker = start_worker(router, vhost)
    subscribe(router.ws_url, "fault-status", ["tidings.user.fault-status"])
    env = {"TIDINGS_ROUTER_URL": router.rs_url, "TIDINGS_BROKER_URL": vhost}

    code, report = status("--json", **env)
    assert code == 0, report
    assert isinstance(report, dict) and report["ok"] and report["down"] == []
    assert report["sessions"]["browsers"] >= 1  # the subscriber above
    assert report["sessions"]["backend"] >= 1  # the worker's Publisher
    queues = report["queues"]
    assert queues["tidings"]["consumers"] >= 1 and queues["tidings.events"]["consumers"] >= 1
    assert queues["tidings.events.dead"]["messages"] == 0
    code, text = status(**env)
    assert code == 0 and "status           ok" in str(text), text

    code, report = status(
        "--json", **{**env, "TIDINGS_ROUTER_URL": f"rs://127.0.0.1:{free_port()}"}
    )
    assert code == 1
    assert report["down"] == ["router", "backend session"], report

    code, report = status("--json", **{**env, "TIDINGS_BACKEND_SECRET": "not-the-secret"})
    assert code == 1
    assert report["down"] == ["backend session"], report

    down_broker = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    code, text = status(**{**env, "TIDINGS_BROKER_URL": down_broker})
    assert code == 1
    assert "broker           DOWN" in str(text) and "status           DOWN: broker" in str(text)
    assert "guest:guest" not in str(text)  # the password is not printed

    worker.stop()
    code, report = status("--json", **env)
    assert code == 1
    assert report["down"] == [
        "worker (no consumer on tidings)",
        "worker (no consumer on tidings.events)",
    ], report
