"""`tidings router`: the Crossbar router with tidings' components, in the foreground."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli.common import CliError, venv_bin
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
    argv = [venv_bin("crossbar"), "start", "--cbdir", str(cbdir), "--loglevel", args.loglevel]
    os.execve(argv[0], argv, env)
    return 0  # not reached
