"""`tidings run`: the router and a worker as child processes; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

from cli.router import router_env
from tidings.settings import Settings

HELP = "router and worker together (Ctrl-C stops both)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, settings: Settings) -> int:
    router_env(settings)  # refuse early, with one line, if secrets are missing
    return run_all(settings)


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    """True once host:port accepts connections; False if `proc` died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def run_all(config: Settings) -> int:
    tidings = [sys.executable, "-m", "cli"]
    children: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()

    def terminate(*_: object) -> None:
        stop()
        sys.exit(143)

    signal.signal(signal.SIGTERM, terminate)
    try:
        router = subprocess.Popen([*tidings, "router"])
        children.append(router)
        backend = urlsplit(config.router_url)
        if not wait_for_port(backend.hostname or "127.0.0.1", backend.port or 8081, 60, router):
            print("tidings run: the router did not start; see its log above", file=sys.stderr)
            stop()
            return 1
        children.append(subprocess.Popen([*tidings, "worker"]))
        print("tidings: router and worker running; open http://127.0.0.1:8080/ (Ctrl-C stops)")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("tidings run: a process exited; stopping the others", file=sys.stderr)
        stop()
        return 1
    except KeyboardInterrupt:
        stop()
        return 0
