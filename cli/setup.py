"""`tidings setup`: declare tidings' exchanges and queues on the broker (safe to run every time)."""

from __future__ import annotations

import argparse

from cli.common import CliError, broker_where
from tidings.settings import Settings

HELP = "declare the broker's exchanges and queues (idempotent; make run does it first)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="say nothing when all went well")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from kombu.exceptions import OperationalError

    from workers.topology import declare

    try:
        queues = declare(settings)
    except (OperationalError, OSError) as exc:
        raise CliError(f"cannot reach the broker at {broker_where(settings)}: {exc}") from None
    if not args.quiet:
        print(f"declared on {broker_where(settings)}: queues {', '.join(queues)}")
    return 0
