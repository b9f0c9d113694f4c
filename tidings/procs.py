"""Child processes on free loopback ports: a real router, a real worker, a throw-away vhost.

Shared by the tests and the benchmark, which both run the real thing rather
than mocks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

from tidings.settings import PROJECT_ROOT

ROOT = PROJECT_ROOT
BIN = Path(sys.executable).parent


# -- ports -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(
    port: int, timeout: float, alive: Callable[[], bool] = lambda: True, host: str = "127.0.0.1"
) -> None:
    """Return once host:port accepts connections; never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process died before port {port} opened")
        if port_open(port, host):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


# -- a throw-away vhost ------------------------------------------------------------
def _rabbitmqctl(*args: str) -> bool:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


@contextmanager
def isolated_vhost(url: str, prefix: str = "tidings-test") -> Iterator[str]:
    """A fresh vhost on a local broker, deleted afterwards, so that runs never share
    the fixed queue names; the URL unchanged where rabbitmqctl cannot help."""
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if not (local and shutil.which("rabbitmqctl") and _rabbitmqctl("add_vhost", name)):
        yield url
        return
    try:
        user = parts.username or "guest"
        _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path="/" + quote(name, safe="")))
    finally:
        _rabbitmqctl("delete_vhost", name)


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
    """A router configuration (the project's by default) moved to free ports in a temp folder."""

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path | None = None,
        config: dict[str, Any] | None = None,
        loglevel: str = "info",
    ) -> None:
        self.loglevel = loglevel
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="tidings-router-"))
        self.web_port = free_port()
        self.rs_port = free_port()
        self.env = env
        self.cbdir = self.dir / ".crossbar"
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

    def start(self, timeout: float = 60) -> Router:
        # A previous router's ports may linger for a moment after it stopped.
        deadline = time.monotonic() + 10
        while (port_open(self.web_port) or port_open(self.rs_port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        argv = [str(BIN / "crossbar"), "start", "--cbdir", str(self.cbdir)]
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
    """`tidings worker` (or another `argv`) connected to a given router and broker."""

    def __init__(
        self,
        router: Router,
        broker_url: str,
        logdir: Path,
        *extra: str,
        env: dict[str, str],
        name: str = "worker",
        argv: list[str] | None = None,
    ) -> None:
        self.router = router
        self.env = {
            **env,
            "TIDINGS_ROUTER_URL": router.rs_url,
            "TIDINGS_BROKER_URL": broker_url,
        }
        self.logdir = logdir
        self.name = name
        self.extra = list(extra)
        self.argv = argv or [str(BIN / "tidings"), "worker", "--loglevel", "INFO"]

    def start(self, timeout: float = 60) -> Worker:
        argv = [*self.argv, *self.extra]
        self._spawn(argv, self.env, self.logdir / f"{self.name}.log", ROOT)
        assert self.log is not None
        self.log.wait_for(" ready.", timeout, self.alive)
        return self
