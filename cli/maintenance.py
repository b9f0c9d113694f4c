"""`tidings maintenance on|off|status`: switch maintenance mode, or ask the router for it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.common import call_router, send_task
from tidings.names import MAINTENANCE_STATUS_PROCEDURE, MAINTENANCE_TASK
from tidings.settings import Settings

HELP = "maintenance mode: on, off, or show its status"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["on", "off", "status"])
    p.add_argument("--message", help="what users are told, e.g. 'back at 14:00'")
    p.add_argument("--by", help="user id of who switched it")
    p.add_argument("--json", action="store_true", help="status as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "status":
        state = call_router(settings, MAINTENANCE_STATUS_PROCEDURE)
        print(json.dumps(state) if args.json else describe(state))
        return 0
    kwargs: dict[str, Any] = {}
    if args.message is not None:
        kwargs["message"] = args.message
    if args.by is not None:
        kwargs["by"] = args.by
    task_id = send_task(settings, MAINTENANCE_TASK, [args.action == "on"], kwargs)
    print(f"queued {MAINTENANCE_TASK} {task_id}: maintenance {args.action}")
    return 0


def describe(state: dict[str, Any]) -> str:
    if not state.get("enabled"):
        return "maintenance off" + (f" since {state['at']}" if state.get("at") else "")
    line = "maintenance ON" + (f" since {state['at']}" if state.get("at") else "")
    if state.get("by") is not None:
        line += f" by {state['by']}"
    return line + (f": {state['message']}" if state.get("message") else "")
