"""`tidings run` (what `make run` starts): a child that dies comes back; Ctrl-C is a clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.processes import BIN, ROOT, LogPump, Router, base_env
from harness.vhost import isolated_vhost


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def children(pid: int) -> dict[str, int]:
    """The supervisor's children by role: {"router": pid, "worker": pid}."""
    found = {}
    for child in psutil.Process(pid).children():
        # `tidings router` and `worker` exec these; they name themselves so.
        line = " ".join(child.cmdline())
        for role, program in (("router", "crossbar"), ("worker", "celery")):
            if program in line:
                found[role] = child.pid
    return found


@pytest.fixture
def own_vhost(broker_url: str) -> Iterator[str]:
    """A vhost no other worker consumes: `tidings run` is ready only when its own worker is."""
    with isolated_vhost(broker_url, prefix="tidings-run") as url:
        yield url


def test_a_killed_worker_is_restarted_and_ctrl_c_stops_everything(own_vhost, tmp_path: Path):
    # The router's configuration on free ports, started by `tidings run` itself.
    router = Router(tmp_path)
    env = base_env(
        TIDINGS_BROKER_URL=own_vhost,
        TIDINGS_ROUTER_URL=router.rs_url,
        TIDINGS_CBDIR=str(router.cbdir),
    )
    proc = subprocess.Popen(
        [str(BIN / "tidings"), "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    log = LogPump(proc.stdout, tmp_path / "run.log")
    alive = lambda: proc.poll() is None  # noqa: E731
    try:
        log.wait_for("tidings is running: open", 90, alive)
        assert f"http://127.0.0.1:{router.web_port}/" in "".join(log.lines)
        first = children(proc.pid)
        assert set(first) == {"router", "worker"}

        os.kill(first["worker"], signal.SIGKILL)
        log.wait_for("the worker exited with status -9; starting it again in 1 s", 10, alive)
        log.wait_for("the worker started again", 10, alive)
        new_worker = lambda: children(proc.pid).get("worker") not in (None, first["worker"])  # noqa: E731
        wait_until(new_worker, 10, "a new worker")
        assert children(proc.pid)["router"] == first["router"]  # the router never stopped

        # Ctrl-C reaches the supervisor; it stops both and exits 0, quietly.
        running = children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(40) == 0
        wait_until(lambda: not children_pids(running), 10, "the router and worker gone")
        assert not any("Traceback" in line or "Error" in line for line in log.lines), log.lines
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def children_pids(found: dict[str, int]) -> list[int]:
    return [pid for pid in found.values() if psutil.pid_exists(pid) and _not_zombie(pid)]


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
