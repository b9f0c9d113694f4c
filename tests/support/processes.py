"""A real Crossbar router and a real Celery worker as child processes, on free ports."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tidings.procs import Child, free_port, port_open, wait_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEST_SECRET = "tidings-test-ticket-secret-0123456789abcdef"
TEST_BACKEND_SECRET = "tidings-test-backend-secret-0123456789abcdef"


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TIDINGS_DEV="1",
        TIDINGS_SECRET=TEST_SECRET,
        TIDINGS_BACKEND_SECRET=TEST_BACKEND_SECRET,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Router(Child):
    """The project's `.crossbar/config.json`, moved to free ports in a temp folder."""

    def __init__(self, workdir: Path | None = None, **env: str) -> None:
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="tidings-router-"))
        self.web_port = free_port()
        self.rs_port = free_port()
        self.env = base_env(**env)
        self.cbdir = self.dir / ".crossbar"
        self.cbdir.mkdir(parents=True, exist_ok=True)
        self.config = self._config()
        (self.cbdir / "config.json").write_text(json.dumps(self.config, indent=2))

    def _config(self) -> dict[str, Any]:
        config = json.loads((ROOT / ".crossbar" / "config.json").read_text())
        for worker in config["workers"]:
            for transport in worker.get("transports", []):
                endpoint = transport["endpoint"]
                if transport["type"] == "web":
                    endpoint["port"] = self.web_port
                    root = transport["paths"]["/"]
                    if root.get("type") == "static":
                        root["directory"] = str(ROOT / "web")
                    # The page's own origin, on this router's port.
                    ws_options = transport["paths"]["ws"].setdefault("options", {})
                    if "allowed_origins" in ws_options:
                        ws_options["allowed_origins"] = [
                            f"http://127.0.0.1:{self.web_port}",
                            f"http://localhost:{self.web_port}",
                        ]
                elif transport["type"] == "rawsocket":
                    endpoint["port"] = self.rs_port
        return config

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws"

    @property
    def rs_url(self) -> str:
        return f"rs://127.0.0.1:{self.rs_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    def start(self, timeout: float = 60) -> Router:
        # A previous router's ports may linger for a moment after it stopped.
        deadline = time.monotonic() + 10
        while (port_open(self.web_port) or port_open(self.rs_port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        argv = [str(BIN / "crossbar"), "start", "--cbdir", str(self.cbdir), "--loglevel", "info"]
        self._spawn(argv, self.env, self.dir / "router.log", self.dir)
        wait_port(self.rs_port, timeout, self.alive)
        wait_port(self.web_port, timeout, self.alive)
        assert self.log is not None
        self.log.wait_for("NODE_BOOT_COMPLETE", timeout, self.alive)
        return self

    def restart(self, downtime: float = 0.0) -> None:
        self.stop()
        time.sleep(downtime)
        self.start()


class Worker(Child):
    """`tidings worker` connected to a given router and broker."""

    def __init__(self, router: Router, broker_url: str, logdir: Path, *extra: str, **env: str):
        self.router = router
        self.env = base_env(
            **{"TIDINGS_ROUTER_URL": router.rs_url, "TIDINGS_BROKER_URL": broker_url, **env}
        )
        self.logdir = logdir
        self.extra = list(extra)

    def start(self, timeout: float = 60) -> Worker:
        argv = [str(BIN / "tidings"), "worker", "--loglevel", "INFO", *self.extra]
        self._spawn(argv, self.env, self.logdir / "worker.log", ROOT)
        assert self.log is not None
        self.log.wait_for(" ready.", timeout, self.alive)
        return self
