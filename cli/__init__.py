"""The `tidings` command: one module per subcommand, assembled here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from cli import (
    check,
    dead_letters,
    maintenance,
    publish,
    router,
    run,
    setup,
    status,
    ticket,
    worker,
)
from cli.common import CliError
from tidings import catalogue
from tidings.errors import ConfigError
from tidings.settings import Settings

# Subcommand → its module (HELP, add_arguments(parser), run(args, settings)).
COMMANDS: dict[str, ModuleType] = {
    "ticket": ticket,
    "publish": publish,
    "maintenance": maintenance,
    "status": status,
    "dead-letters": dead_letters,
    "setup": setup,
    "check": check,
    "router": router,
    "worker": worker,
    "run": run,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings", description="Real-time notifications: domain events to browsers over WAMP."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # What goes wrong is said in one line per command; the libraries' own
    # warnings (a refused backend session, retried) would repeat it.
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":  # it names every wrong value itself, not the first only
            return check.report(args)
        settings = Settings.from_environ(os.environ)
        catalogue.current()  # every command and process reads it: a wrong entry stops here
        return int(COMMANDS[args.command].run(args, settings))
    except (CliError, ConfigError) as exc:
        print(f"tidings {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
