"""`tidings run`: the router and a worker for development; a child that dies is restarted.

Both run as children in sessions of their own, so that Ctrl-C reaches only
this supervisor, which stops them in order and exits quietly with status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from cli.router import router_env
from tidings.names import CONSUMED_QUEUES
from tidings.settings import Settings

HELP = "router and worker together, for development (Ctrl-C stops both)"
# Seconds before a dead child is started again: doubling, and back to the
# first once it has run this long.
FIRST_DELAY, MAX_DELAY, STEADY = 1.0, 30.0, 60.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="the router's and worker's info logs")


def run(args: argparse.Namespace, settings: Settings) -> int:
    router_env(settings)  # refuse early, with one line, if secrets are missing
    return Supervisor(settings, verbose=args.verbose).run()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the supervisor dies, however it dies."""
    with contextlib.suppress(OSError):  # not Linux: Ctrl-C still stops everything
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """One supervised process, restarted with backoff when it dies."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.delay = FIRST_DELAY
        self.restart_at: float | None = None

    def start(self) -> None:
        # Development on a machine where one works as root: Celery's warning
        # about it would greet every start.
        env = {**os.environ, "PYTHONWARNINGS": "ignore:You're running the worker with superuser"}
        self.proc = subprocess.Popen(
            self.argv, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )
        self.started = time.monotonic()
        self.restart_at = None

    def died(self) -> tuple[int, float] | None:
        """(exit status, seconds until it starts again) if it died since the last look."""
        if self.proc is None or self.restart_at is not None:
            return None
        code = self.proc.poll()
        if code is None:
            return None
        if time.monotonic() - self.started > STEADY:
            self.delay = FIRST_DELAY
        wait, self.delay = self.delay, min(self.delay * 2, MAX_DELAY)
        self.restart_at = time.monotonic() + wait
        return code, wait

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Supervisor:
    def __init__(
        self, settings: Settings, verbose: bool = False, out: Callable[[str], None] = print
    ):
        cli = [sys.executable, "-m", "cli"]
        router_level = ["--loglevel", "info" if verbose else "error"]
        worker_level = ["--loglevel", "INFO"] if verbose else ["--loglevel", "WARNING", "--quiet"]
        self.settings = settings
        self.router = Child("router", [*cli, "router", *router_level])
        self.worker = Child("worker", [*cli, "worker", *worker_level])
        self.out = out

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._raise_interrupt())
        try:
            self.router.start()
            backend = urlsplit(self.settings.router_url)
            host, port = backend.hostname or "127.0.0.1", backend.port or 8081
            if not _wait(lambda: _accepts(host, port), 60, self.router):
                self.out("tidings run: the router did not start; see its log above")
                return 1
            self.worker.start()
            if not _wait(lambda: _consumed(self.settings.broker_url), 60, self.worker):
                self.out("tidings run: the worker did not start consuming; see its log above")
                return 1
            self.out(f"tidings is running: open {page_url(self.settings)} (Ctrl-C stops it)")
            if self.settings.dev:
                self.out("development mode: built-in secrets and a demo sign-in; never expose it")
            while True:
                self._restart_the_dead()
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        finally:
            self.worker.stop()
            self.router.stop()

    def _restart_the_dead(self) -> None:
        for child in (self.router, self.worker):
            died = child.died()
            if died is not None:
                code, wait = died
                self.out(
                    f"tidings run: the {child.name} exited with status {code}; "
                    f"starting it again in {wait:.0f} s"
                )
            if child.restart_at is not None and time.monotonic() >= child.restart_at:
                child.start()
                self.out(f"tidings run: the {child.name} started again")

    @staticmethod
    def _raise_interrupt() -> None:
        raise KeyboardInterrupt


def page_url(settings: Settings) -> str:
    """The demo page: the web transport of this node."""
    if settings.http_port:
        return f"http://127.0.0.1:{settings.http_port}/"
    port = 8080
    try:
        config = json.loads((settings.cbdir / "config.json").read_text(encoding="utf-8"))
        for worker in config["workers"]:
            for transport in worker.get("transports", []):
                if transport["type"] == "web":
                    port = int(transport["endpoint"]["port"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # the router says what is wrong with its configuration
    return f"http://127.0.0.1:{port}/"


def _wait(ready: Callable[[], bool], timeout: float, child: Child) -> bool:
    """True once `ready()`; False if the child died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc is None or child.proc.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(0.2)
    return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _consumed(broker_url: str) -> bool:
    """Whether both of tidings' queues have a consumer: the worker is ready."""
    from kombu import Connection

    try:
        with Connection(broker_url, connect_timeout=2) as conn:
            channel = conn.channel()
            return all(channel.queue_declare(q, passive=True)[2] > 0 for q in CONSUMED_QUEUES)
    except Exception:
        return False  # not declared yet, or the broker is not up yet
