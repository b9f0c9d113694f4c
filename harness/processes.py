"""Child processes for tests and the bench: a real router and a real worker, on free ports.

Both run the real thing rather than mocks: the router from the project's
`.crossbar/config.json` moved to free loopback ports in a temp folder, the
worker as `tidings worker`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.ports import free_port, port_open, wait_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TEST_SECRET = "tidings-test-ticket-secret-0123456789abcdef"
TEST_BACKEND_SECRET = "tidings-test-backend-secret-0123456789abcdef"


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment with the test secrets, plus `extra`."""
    env = dict(os.environ)
    env.update(
        TIDINGS_DEV="1",
        TIDINGS_SECRET=TEST_SECRET,
        TIDINGS_BACKEND_SECRET=TEST_BACKEND_SECRET,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# -- child processes ---------------------------------------------------------------
class LogPump:
    """Copies a child's output to a file and remembers it for assertions."""

    def __init__(self, stream: IO[bytes], path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                out.write(line)
                out.flush()

    def wait_for(self, text: str, timeout: float, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                if text in self.lines[seen]:
                    return
                seen += 1
            if not alive():
                raise RuntimeError(f"process exited before printing {text!r}; log: {self.path}")
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not printed within {timeout}s; log: {self.path}")


class Child:
    """A child process in its own process group, with its output pumped to a log."""

    proc: subprocess.Popen[bytes] | None = None
    log: LogPump | None = None

    def _spawn(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.log = LogPump(self.proc.stdout, log_path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)
        self.proc = None


def project_router_config() -> dict[str, Any]:
    return dict(json.loads((ROOT / ".crossbar" / "config.json").read_text()))


class Router(Child):
    """A router configuration (the project's by default) moved to free ports in a temp folder.

    `env`: the whole environment (default: `base_env()`); `extra` is added to it.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        env: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
        loglevel: str = "info",
        **extra: str,
    ) -> None:
        self.loglevel = loglevel
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="tidings-router-"))
        self.web_port = free_port()
        self.rs_port = free_port()
        self.cbdir = self.dir / ".crossbar"
        # Its own maintenance state, never the checkout's `.crossbar/maintenance.json`.
        given = env if env is not None else base_env()
        self.env = {
            **given,
            "TIDINGS_CBDIR": str(self.cbdir),
            # Its own, unless the caller chose one (0: off).
            "TIDINGS_ROUTER_METRICS_PORT": str(free_port()),
            **{k: v for k, v in given.items() if k == "TIDINGS_ROUTER_METRICS_PORT"},
            **extra,
        }
        self.metrics_port = int(self.env["TIDINGS_ROUTER_METRICS_PORT"])
        self.cbdir.mkdir(parents=True, exist_ok=True)
        self.config = self._on_free_ports(config or project_router_config())
        (self.cbdir / "config.json").write_text(json.dumps(self.config, indent=2))

    def _on_free_ports(self, config: dict[str, Any]) -> dict[str, Any]:
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

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60) -> Router:
        # A previous router's ports may linger for a moment after it stopped.
        deadline = time.monotonic() + 10
        while (port_open(self.web_port) or port_open(self.rs_port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        argv = [sys.executable, "-m", "router.launch", "start", "--cbdir", str(self.cbdir)]
        argv += ["--loglevel", self.loglevel]
        self._spawn(argv, self.env, self.dir / "router.log", self.dir)
        wait_port(self.rs_port, timeout, self.alive)
        wait_port(self.web_port, timeout, self.alive)
        assert self.log is not None
        if self.loglevel in ("info", "debug", "trace"):
            self.log.wait_for("NODE_BOOT_COMPLETE", timeout, self.alive)
        # Quieter levels do not say when boot completes; the ports open last.
        return self

    def restart(self, downtime: float = 0.0) -> None:
        self.stop()
        time.sleep(downtime)
        self.start()


class Worker(Child):
    """`tidings worker` (or another `argv`) connected to a given router and broker.

    `env`: the whole environment (default: `base_env()`); `extra` is added to it.
    """

    def __init__(
        self,
        router: Router,
        broker_url: str,
        logdir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        name: str = "worker",
        argv: list[str] | None = None,
        **extra: str,
    ) -> None:
        self.router = router
        given = env if env is not None else base_env()
        self.env = {
            **given,
            "TIDINGS_ROUTER_URL": router.rs_url,
            "TIDINGS_BROKER_URL": broker_url,
            # Its own, unless the caller chose one (0: off).
            "TIDINGS_WORKER_METRICS_PORT": str(free_port()),
            **{k: v for k, v in given.items() if k == "TIDINGS_WORKER_METRICS_PORT"},
            **extra,
        }
        self.metrics_port = int(self.env["TIDINGS_WORKER_METRICS_PORT"])
        self.logdir = logdir
        self.name = name
        self.extra = list(args)
        self.argv = argv or [str(BIN / "tidings"), "worker", "--loglevel", "INFO"]

    @property
    def metrics_url(self) -> str:
        """The worker's Prometheus endpoint; /livez and /readyz beside it."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60) -> Worker:
        argv = [*self.argv, *self.extra]
        self._spawn(argv, self.env, self.logdir / f"{self.name}.log", ROOT)
        assert self.log is not None
        self.log.wait_for(" ready.", timeout, self.alive)
        return self
