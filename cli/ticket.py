"""`tidings ticket`: print a one-time browser ticket (JWT) for a user."""

from __future__ import annotations

import argparse

from cli.common import CliError
from tidings import tickets
from tidings.settings import Settings

HELP = "print a one-time browser ticket (JWT) for a user"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="user id; becomes the WAMP authid")
    p.add_argument("--perm", action="append", default=[], help="permission, e.g. entity:order:view")
    p.add_argument(
        "--ttl", type=int, default=tickets.DEFAULT_TTL, help="seconds until it expires (max 3600)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        print(tickets.issue(settings.require_secret(), args.user, args.perm, args.ttl))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return 0
