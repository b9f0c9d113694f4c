"""`tidings dead-letters list|replay`: what is in the dead-letter queue, and sending it back."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from cli.common import CliError, broker_where
from tidings.names import DEAD_QUEUE
from tidings.settings import Settings

if TYPE_CHECKING:
    from workers.dead_letters import DeadLetter

HELP = "list, replay or purge the dead-letter queue"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "replay", "purge"])
    p.add_argument("--limit", type=int, help="at most this many (list: 20 unless given)")
    p.add_argument("--match", help="replay or purge only those whose reason contains this text")
    p.add_argument("--json", action="store_true", help="list as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from kombu.exceptions import OperationalError

    from workers import dead_letters

    try:
        if args.action == "list":
            count, letters = dead_letters.browse(settings.broker_url, args.limit or 20)
            if args.json:
                print(json.dumps({"count": count, "first": [d.as_dict() for d in letters]}))
            else:
                print(render(count, letters))
            return 0
        if args.action == "purge":
            dropped = dead_letters.purge(settings.broker_url, args.match)
            print(f"dropped {dropped} dead letters from {DEAD_QUEUE}")
            return 0
        done = dead_letters.replay(settings.broker_url, args.limit, args.match)
    except (OperationalError, OSError) as exc:
        raise CliError(f"cannot reach the broker at {broker_where(settings)}: {exc}") from None
    print(f"replayed {done.events} events and {done.tasks} tasks; {done.left} left in {DEAD_QUEUE}")
    if args.match and not done.events + done.tasks and done.skipped:
        print(
            f"tidings dead-letters: no reason contains {args.match!r}; --match looks at the "
            "reasons only (`tidings dead-letters list` shows them)",
            file=sys.stderr,
        )
    return 0


def render(count: int, letters: list[DeadLetter]) -> str:
    """The listing for people."""
    if not count:
        return f"{DEAD_QUEUE} is empty"
    lines = [f"{count} in {DEAD_QUEUE}" + (f", first {len(letters)}:" if letters else "")]
    for n, letter in enumerate(letters, 1):
        origin = (
            f"routing key {letter.routing_key}" if letter.routing_key else f"task {letter.task}"
        )
        again = f", replayed {letter.replays}x" if letter.replays else ""
        lines.append(f"{n:>4}. {letter.reason}")
        lines.append(f"      {origin}, {letter.size} bytes{again}: {letter.excerpt}")
    return "\n".join(lines)
