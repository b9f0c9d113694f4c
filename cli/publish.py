"""`tidings publish`: enqueue `tidings.publish(TOPIC, PAYLOAD)`."""

from __future__ import annotations

import argparse
from typing import Any

from cli.common import CliError, parse_json, send_task
from tidings import events
from tidings.errors import InvalidEvent
from tidings.names import PUBLISH_TASK
from tidings.settings import Settings

HELP = "enqueue tidings.publish(TOPIC, PAYLOAD)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", help="a catalogue topic, e.g. tidings.user.1")
    p.add_argument("payload", help="a JSON object")
    p.add_argument("--retain", action="store_true", help="the router keeps it for late joiners")
    p.add_argument("--exclude", action="append", help="user id not to deliver to")
    p.add_argument("--only", action="append", help="deliver only to this user id")


def run(args: argparse.Namespace, settings: Settings) -> int:
    payload = parse_json(args.payload, "the payload")
    if not isinstance(payload, dict):
        raise CliError('the payload must be a JSON object, e.g. \'{"text": "hello"}\'')
    kwargs: dict[str, Any] = {"retain": args.retain}
    if args.exclude:
        kwargs["exclude_authids"] = args.exclude
    if args.only:
        kwargs["eligible_authids"] = args.only
    try:
        # What the worker would refuse, refused here, with the same reason.
        events.publish(args.topic, payload, **kwargs)
    except InvalidEvent as exc:
        raise CliError(str(exc)) from None
    task_id = send_task(settings, PUBLISH_TASK, [args.topic, payload], kwargs)
    print(f"queued {PUBLISH_TASK} {task_id}")
    return 0
