"""`tidings router`: the Crossbar router with tidings' components, in the foreground."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.common import CliError
from tidings.settings import Settings

HELP = "start the Crossbar router (foreground)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cbdir", help="router directory (default .crossbar or TIDINGS_CBDIR)")
    p.add_argument("--loglevel", default="info")


def router_env(settings: Settings) -> dict[str, str]:
    """The environment the router needs, with secrets checked (dev defaults filled in)."""
    env = dict(os.environ)
    env["TIDINGS_SECRET"] = settings.require_secret()
    env["TIDINGS_BACKEND_SECRET"] = settings.require_backend_secret()
    return env


def run(args: argparse.Namespace, settings: Settings) -> int:
    env = router_env(settings)
    cbdir = Path(args.cbdir or settings.cbdir)
    if not (cbdir / "config.json").is_file():
        raise CliError(f"no router configuration at {cbdir / 'config.json'}")
    node_dir = node_directory(cbdir, settings)
    # Crossbar's own command, in tidings' log format (router.launch).
    argv = [sys.executable, "-m", "router.launch", "start", "--cbdir", str(node_dir)]
    argv += ["--loglevel", args.loglevel]
    os.execve(argv[0], argv, env)
    return 0  # not reached


def node_directory(cbdir: Path, settings: Settings) -> Path:
    """This node's run directory, `<cbdir>/run/<node>`, with the configuration you edit
    (`<cbdir>/config.json`) on this node's ports (TIDINGS_HTTP_PORT, TIDINGS_BACKEND_PORT).

    Each node keeps its key and process id there, so several nodes can run
    from one checkout.
    """
    config = json.loads((cbdir / "config.json").read_text(encoding="utf-8"))
    for worker in config.get("workers", []):
        for transport in worker.get("transports", []):
            if transport.get("type") == "web":
                _web_on_port(transport, cbdir, settings.http_port)
            elif transport.get("type") == "rawsocket" and settings.backend_port:
                transport["endpoint"]["port"] = settings.backend_port
    run = cbdir / "run" / settings.node
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return run


def _web_on_port(transport: dict[str, Any], cbdir: Path, port: int | None) -> None:
    port = transport["endpoint"]["port"] = port or transport["endpoint"]["port"]
    for service in transport.get("paths", {}).values():
        # Paths of the configuration are relative to where it is, not to the run directory.
        folder = service.get("directory")
        if isinstance(folder, str) and not Path(folder).is_absolute():
            service["directory"] = str((cbdir / folder).resolve())
        origins = service.get("options", {}).get("allowed_origins")
        if isinstance(origins, list):
            # This node's own page, as well as the others' (a page fails over between nodes).
            mine = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
            service["options"]["allowed_origins"] = [
                *origins,
                *(o for o in mine if o not in origins),
            ]
