"""`tidings check`: is this host fit to start a router or a worker? One line per problem.

Run before every start (the systemd units do, in ExecStartPre=): every
TIDINGS_* value, the secrets, the catalogue, the router's configuration, the
broker, Redis when it is used, and with `--router` / `--worker` the ports the
process is about to listen on.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cli.common import broker_where, seconds
from tidings import catalogue
from tidings.errors import ConfigError
from tidings.settings import Settings

HELP = "check the environment and configuration before a start; exit status 1 if one is wrong"

# The variables each check depends on: a check is skipped when one of them is wrong
# (its line says so already), rather than run against the default.
_BROKER = ("TIDINGS_BROKER_URL",)
_REDIS = ("TIDINGS_REDIS_URL",)
_ROUTER_PORTS = ("TIDINGS_HTTP_PORT", "TIDINGS_BACKEND_PORT", "TIDINGS_ROUTER_METRICS_PORT")
_WORKER_PORTS = ("TIDINGS_WORKER_METRICS_PORT",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router", action="store_true", help="also: the router's ports are free")
    p.add_argument("--worker", action="store_true", help="also: the worker's metrics port is free")
    p.add_argument(
        "--timeout", type=seconds, default=3.0, help="seconds the broker and Redis may take"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    return report(args)


def report(args: argparse.Namespace) -> int:
    """Print the problems of this process's environment, or "ok"; the exit status.

    It reads the environment itself rather than Settings: each wrong value gets
    its own line, not only the first.
    """
    problems = check(os.environ, router=args.router, worker=args.worker, timeout=args.timeout)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    scope = " and ".join(n for n, on in (("router", args.router), ("worker", args.worker)) if on)
    print(f"ok: ready to start{' the ' + scope if scope else ''}")
    return 0


def check(
    environ: Mapping[str, str], *, router: bool = False, worker: bool = False, timeout: float = 3.0
) -> list[str]:
    """Every problem found, one line each; [] when all is well. Never raises for a problem."""
    wrong = wrong_values(environ)
    problems = list(wrong.values())
    # The checks below run with the values that are right; a wrong one is left to its default.
    settings = Settings.from_environ({k: v for k, v in environ.items() if k not in wrong})

    def usable(names: tuple[str, ...]) -> bool:
        return not any(name in wrong for name in names)

    if not settings.dev:
        for name, require in (
            ("TIDINGS_SECRET", settings.require_secret),
            ("TIDINGS_BACKEND_SECRET", settings.require_backend_secret),
        ):
            try:
                if name not in wrong:  # a secret too short is named already
                    require()
            except ConfigError as exc:
                problems.append(str(exc))
    problems += _catalogue(environ)
    config, problem = _router_config(settings.cbdir)
    problems += problem
    if usable(_BROKER):
        problems += _broker(settings, timeout)
    if settings.redis_url and usable(_REDIS):
        problems += _redis(settings.redis_url, timeout)
    ports: list[tuple[str, str, int]] = []
    if router and usable(_ROUTER_PORTS):
        ports += _router_ports(settings, config)
    if worker and usable(_WORKER_PORTS) and settings.worker_metrics_port:
        ports.append(("TIDINGS_WORKER_METRICS_PORT", "127.0.0.1", settings.worker_metrics_port))
    problems += _ports(ports)
    return problems


def wrong_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Each TIDINGS_* variable that Settings refuses, with its one line, in name order.

    Checked one at a time (with TIDINGS_DEV, which decides what a secret must be),
    so that every wrong one is named, not only the first.
    """
    wrong: dict[str, str] = {}
    dev = {"TIDINGS_DEV": environ["TIDINGS_DEV"]} if "TIDINGS_DEV" in environ else {}
    try:
        Settings.from_environ(dev)
    except ConfigError as exc:
        wrong["TIDINGS_DEV"] = str(exc)
        dev = {}  # the others as outside development
    for name in sorted(n for n in environ if n.startswith("TIDINGS_") and n != "TIDINGS_DEV"):
        try:
            Settings.from_environ({**dev, name: environ[name]})
        except ConfigError as exc:
            wrong[name] = str(exc)
    return dict(sorted(wrong.items()))


def _catalogue(environ: Mapping[str, str]) -> list[str]:
    try:
        catalogue.load(Path(environ.get(catalogue.PATH_VARIABLE) or catalogue.DEFAULT_PATH))
    except ConfigError as exc:
        return [str(exc)]  # it names the file
    return []


def _router_config(cbdir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    path = cbdir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [f"no router configuration at {path} (TIDINGS_CBDIR)"]
    except OSError as exc:
        return None, [f"cannot read the router configuration {path}: {exc.strerror or exc}"]
    except ValueError as exc:
        return None, [f"{path}: not JSON ({exc})"]
    if not isinstance(config, dict):
        return None, [f"{path}: not a Crossbar configuration (not a JSON object)"]
    return config, []


def _broker(settings: Settings, timeout: float) -> list[str]:
    from kombu import Connection

    where = broker_where(settings)
    try:
        with Connection(settings.broker_url, connect_timeout=timeout) as conn:
            conn.connect()  # once: systemd tries the whole start again
    except Exception as exc:
        return [f"broker: cannot reach {where}: {exc}"]
    return []


def _redis(url: str, timeout: float) -> list[str]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except Exception as exc:
        return [f"Redis: cannot reach {_without_password(url)}: {exc}"]
    finally:
        client.close()
    return []


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:**@" if parts.username else ":**@"
    return parts._replace(netloc=user + netloc).geturl()


def _router_ports(settings: Settings, config: dict[str, Any] | None) -> list[tuple[str, str, int]]:
    """(what, interface, port) of each port the router listens on: web and backend from the
    variables or else its configuration, and its metrics on loopback."""
    ports: list[tuple[str, str, int]] = []
    for kind, variable, given in (
        ("web", "TIDINGS_HTTP_PORT", settings.http_port),
        ("rawsocket", "TIDINGS_BACKEND_PORT", settings.backend_port),
    ):
        interface, configured = _endpoint(config, kind)
        port = given or configured
        if port:
            what = variable if given else f"the {kind} transport of config.json"
            ports.append((what, interface, port))
    if settings.router_metrics_port:
        ports.append(("TIDINGS_ROUTER_METRICS_PORT", "127.0.0.1", settings.router_metrics_port))
    return ports


def _endpoint(config: dict[str, Any] | None, kind: str) -> tuple[str, int | None]:
    """The interface and port of the configuration's first transport of `kind`."""
    try:
        for transport in (config or {})["workers"][0]["transports"]:
            if transport["type"] == kind:
                endpoint = transport["endpoint"]
                return str(endpoint.get("interface", "")), int(endpoint["port"])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        pass
    return "", None


def _ports(ports: list[tuple[str, str, int]]) -> list[str]:
    problems = []
    seen: dict[int, str] = {}
    for what, interface, port in ports:
        if port in seen:
            problems.append(f"{seen[port]} and {what} are both port {port}")
            continue
        seen[port] = what
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As the router and the metrics servers do: a port in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((interface, port))
            except OSError as exc:
                where = f"{interface}:{port}" if interface else f"port {port}"
                problems.append(f"{what}: {where} is taken ({exc.strerror or exc})")
    return problems
